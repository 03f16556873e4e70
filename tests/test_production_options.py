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


def test_cost_and_the_monitor_tell_bqspools_own_query_jobs_by_their_labels():
    """The job history holds everyone's queries; bqspool's carry its labels (the emulator
    keeps no history, so the history is given here, as BigQuery's INFORMATION_SCHEMA has it)."""
    from bqspool.loader.interfaces import QueryStat
    from bqspool.loader.labels import job_labels
    from bqspool.loader.operate.cost import _queries
    from bqspool.loader.testing import MemoryObjectStore, MemoryWarehouse
    from bqspool.loader.watch.rules import slow_queries

    now = time.time()
    history = [
        QueryStat(now - 50, "analyst_1", 2 * 2**40, 3.0, {"team": "bi"}),
        QueryStat(now - 40, "bqspool_v", 2**40, 9.0, job_labels("verify", "p")),
        QueryStat(now - 30, "bqspool_q", 2**39, 99.0, job_labels("query", "p")),
        QueryStat(now - 20, "spoofed", 2**30, 1.0, {"bqspool_role": "verify"}),  # no bqspool label: not ours
    ]

    class WithHistory(MemoryWarehouse):
        def query_history(self, since):
            return [q for q in history if q.started >= since]

    cfg = load_config(env={})
    found = _queries(WithHistory(MemoryObjectStore()), cfg, now - 3600)
    assert found["jobs"] == 4
    own = found["bqspool"]
    assert own == {
        "jobs": 2,
        "bytes_billed": 2**40 + 2**39,
        "usd": round(1.5 * 6.25, 6),
        "by_role": {"query": 1, "verify": 1},
    }
    alert = slow_queries(history, dataclasses.replace(cfg, monitor_query_seconds=60))
    assert alert is not None and alert.message.startswith("bqspool's own query job bqspool_q ran 99 s")


TABLE_KEY = "projects/p/locations/us/keyRings/bqspool/cryptoKeys/tasks-only"


def _own_key_set(tmp_path):
    """The eixa schema set, its tasks table with a key of its own."""
    import shutil

    from bqspool.schemas.registry import resolve_schema_dir

    folder = tmp_path / "schemas"
    shutil.copytree(resolve_schema_dir("eixa"), folder)
    raw = json.loads((folder / "tasks.json").read_text())
    (folder / "tasks.json").write_text(json.dumps({**raw, "kms_key": TABLE_KEY}))
    return folder


@pytest.mark.parametrize(
    "bad", [17, "", "projects/p/keyRings/r/cryptoKeys/k", "projects/p/locations/us/keyRings/r", ["a"], None]
)
def test_a_tables_own_key_is_checked_when_the_schema_file_is_read(bad):
    from bqspool.schemas.definition import parse_table
    from bqspool.schemas.errors import SchemaError

    raw = {"fields": [{"name": "a", "type": "STRING"}], "kms_key": bad}
    if bad is None:
        assert parse_table("t", raw).kms_key is None
        return
    with pytest.raises(SchemaError, match="kms_key must be a Cloud KMS key's name"):
        parse_table("t", raw)


def test_a_tables_own_key_goes_with_its_table_its_jobs_and_its_objects(stack, tmp_path, monkeypatch):
    """tasks has its own key: its table, load jobs, staged objects and archive files go with
    it; every other table and the commit log with the configured one. Read on the wire."""
    import os

    from .counting_proxy import CountingProxy

    direct = {k: os.environ[k] for k in ("STORAGE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST")}
    gcs, bq = CountingProxy(direct["STORAGE_EMULATOR_HOST"]), CountingProxy(direct["BIGQUERY_EMULATOR_HOST"])
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq.url)
        env = Env(tmp_path, _own_key_set(tmp_path), kms_key=KEY)
        with Buffer(env.config.buffer, env.config.schemas) as buf:
            buf.append("tasks", {"user_id": "u", "task_id": "1", "created_at": time.time()})
            buf.append("routines", {"user_id": "u", "routine_id": "r", "created_at": time.time()})
        assert env.drainer().drain_once().events_loaded == 2
    finally:
        gcs.close()
        bq.close()
    from urllib.parse import parse_qs, urlsplit

    keys = {}
    for m, t, b in gcs.seen:
        if m == "POST" and t.startswith("/upload/"):
            q = parse_qs(urlsplit(t).query)
            name = q.get("name", [None])[0] or json.loads(b.split(b"\r\n\r\n", 1)[1].split(b"\r\n", 1)[0])["name"]
            keys[name] = q["kmsKeyName"][0]
    prefix = env.config.prefix

    # The data of tasks (staged objects, archive files) under its key; the commit log (names
    # and counts, no event) under the configured one, as every other table's objects.
    def area_table(name):
        return tuple(name.removeprefix(prefix + "/").split("/")[:2])

    tasks = {n: k for n, k in keys.items() if area_table(n) in (("staged", "tasks"), ("archive", "tasks"))}
    assert {area_table(n)[0] for n in tasks} == {"staged", "archive"}
    assert tasks and set(tasks.values()) == {TABLE_KEY}, {n: k for n, k in tasks.items() if k != TABLE_KEY}
    others = {n: k for n, k in keys.items() if n not in tasks}
    assert any("/routines/" in n for n in others) and set(others.values()) == {KEY}, others
    made = {
        b["tableReference"]["tableId"]: b["encryptionConfiguration"]["kmsKeyName"]
        for m, t, raw in bq.seen
        if m == "POST" and t.split("?")[0].endswith("/tables")
        for b in [json.loads(raw)]
    }
    assert made["tasks"] == TABLE_KEY and {k for t, k in made.items() if t != "tasks"} == {KEY}
    loads = {
        j["configuration"]["load"]["destinationTable"]["tableId"]: j["configuration"]["load"][
            "destinationEncryptionConfiguration"
        ]["kmsKeyName"]
        for m, t, raw in bq.seen
        if m == "POST" and t.split("?")[0].endswith("/jobs")
        for j in [json.loads(raw)]
        if "load" in j["configuration"]
    }
    assert loads == {"tasks": TABLE_KEY, "routines": KEY}


def test_a_copy_names_the_key_its_copy_is_encrypted_with():
    from bqspool.loader.backends.gcs_batch import copy_call

    _, plain = copy_call("b", "p/staged/x", "p/split/x")
    assert "destinationKmsKeyName" not in plain
    _, keyed = copy_call("b", "p/staged/x", "p/split/x", KEY)
    assert keyed.endswith(
        "&destinationKmsKeyName=projects%2Fp%2Flocations%2Fus%2FkeyRings%2Fbqspool%2FcryptoKeys%2Fspool"
    )
