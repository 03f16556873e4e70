"""What a platform team sets before production: labels on every job, a separate job
project, keyless impersonation. Labels on the local stack (the emulator keeps them);
the clients' wiring without network, as the Google clients build it."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
from bqspool.buffer import Buffer
from bqspool.loader.clients import make_warehouse
from bqspool.loader.config import load_config
from bqspool.schemas.errors import ConfigError

from .loader_support import Env


def test_every_job_carries_its_labels(stack, tmp_path):
    from bqspool.loader import Analytics
    from bqspool.loader.labels import version

    env = Env(tmp_path, "eixa", prefix="fleet/Eixa.prod")
    with Buffer(env.config.buffer, "eixa") as buf:
        buf.append("tasks", {"user_id": "u1", "task_id": "t1", "created_at": time.time()})
    env.drainer().drain_once()  # through make_warehouse: the committer's labels
    assert Analytics(env.config).run("task-completion-rate", {"user_id": "u1"}) is not None
    # This dataset's load jobs (the emulator's one project holds every test's).
    found = list(env.warehouse.client.list_jobs(max_results=200))
    jobs = {j.job_id: j.labels for j in found}
    loads = [
        j.labels for j in found if j.job_type == "load" and getattr(j.destination, "dataset_id", None) == env.dataset
    ]
    assert loads and all(
        labels
        == {
            "bqspool": version().replace(".", "-"),
            "bqspool_role": "commit",
            "bqspool_prefix": "fleet-eixa-prod",  # sanitised to BigQuery's label rules
            "bqspool_table": "tasks",
        }
        for labels in loads
    ), jobs
    # The emulator keeps a load job's labels but drops a query job's (docs/testing.md):
    # what the query sends is checked where it is built.
    config = make_warehouse(env.config, "query")._job_config([])
    assert config.labels["bqspool_role"] == "query" and config.labels["bqspool_prefix"] == "fleet-eixa-prod"


@pytest.fixture
def no_emulator(monkeypatch):
    """The real clients' path, with credentials that need no network."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials

    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(google.auth, "default", lambda *a, **kw: (AnonymousCredentials(), "source-project"))


def test_jobs_run_in_the_job_project_and_tables_stay_in_the_data_project(no_emulator):
    cfg = dataclasses.replace(
        load_config(env={}), project="data-project", dataset="d", job_project="jobs-project", location="EU"
    )
    warehouse = make_warehouse(cfg)
    assert warehouse.client.project == "jobs-project"  # jobs, lookups and queries count here
    assert warehouse.table_ref("tasks") == "data-project.d.tasks"
    plain = make_warehouse(dataclasses.replace(cfg, job_project=None))
    assert plain.client.project == "data-project"


def test_impersonation_gives_both_clients_short_lived_tokens_of_the_service_account(no_emulator):
    from bqspool.loader.clients import make_object_store
    from google.auth import impersonated_credentials

    account = "bqspool-loader@data-project.iam.gserviceaccount.com"
    cfg = dataclasses.replace(
        load_config(env={}), project="data-project", dataset="d", bucket="b-x", impersonate_service_account=account
    )
    for client in (make_warehouse(cfg).client, make_object_store(cfg).client):
        creds = client._credentials
        assert isinstance(creds, impersonated_credentials.Credentials)
        assert creds.service_account_email == account


@pytest.mark.parametrize(
    ("key", "value"),
    [("impersonate_service_account", "not-an-email"), ("job_project", "Bad_Project!")],
)
def test_a_malformed_option_is_refused_with_its_name(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config(env={f"BQSPOOL_{key.upper()}": value})


KEY = "projects/p/locations/us/keyRings/bqspool/cryptoKeys/spool"


def test_a_customer_managed_key_goes_with_every_object_table_and_load_job(stack, tmp_path, monkeypatch):
    """The emulators take the key and keep nothing of it, so what bqspool sends is read on
    the wire, through a proxy in front of each server; verify then finds every table
    without the key, and --fix refuses with the way to re-encrypt."""
    import os
    import subprocess

    from .counting_proxy import CountingProxy
    from .loader_support import BQSPOOL

    direct = {k: os.environ[k] for k in ("STORAGE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST")}
    gcs, bq = CountingProxy(direct["STORAGE_EMULATOR_HOST"]), CountingProxy(direct["BIGQUERY_EMULATOR_HOST"])
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq.url)
        env = Env(tmp_path, "eixa", kms_key=KEY, batch_rows=3)  # creates its tables: with the key
        with Buffer(env.config.buffer, "eixa") as buf:
            for i in range(5):
                buf.append("tasks", {"user_id": "u", "task_id": str(i), "created_at": time.time()})
        assert env.drainer().drain_once().events_loaded == 5
        writes = [(t, b) for m, t, b in gcs.seen if m == "POST" and t.startswith("/upload/")]
        assert writes and all("kmsKeyName=" in t for t, _ in writes), [t for t, _ in writes if "kmsKeyName" not in t]
        made = [json.loads(b) for m, t, b in bq.seen if m == "POST" and t.split("?")[0].endswith("/tables")]
        assert len(made) == 5 and all(t["encryptionConfiguration"] == {"kmsKeyName": KEY} for t in made), made
        jobs = [json.loads(b) for m, t, b in bq.seen if m == "POST" and t.split("?")[0].endswith("/jobs")]
        loads = [j["configuration"]["load"] for j in jobs if "load" in j["configuration"]]
        assert loads and all(ld["destinationEncryptionConfiguration"] == {"kmsKeyName": KEY} for ld in loads)
    finally:
        gcs.close()
        bq.close()
    res = subprocess.run(
        [BQSPOOL, "verify", "--no-audit", "--fix"],
        env=env.env(BQSPOOL_KMS_KEY=KEY, **direct),
        capture_output=True,
        text=True,
    )
    assert res.returncode == 7, res.stdout + res.stderr  # the emulator kept no key: drift, refused
    assert "tasks: encryption key" in res.stdout and "--destination_kms_key" in res.stdout, res.stdout
