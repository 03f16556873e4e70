"""`bqspool doctor`: each check passes on a sound setup, and each failure is produced on
purpose and said with its fix: on the local stack where it can be, on a fake probe
for what the emulators cannot do (IAM)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

from bqspool.buffer import Buffer
from bqspool.loader import iam
from bqspool.loader.clients import make_object_store, make_warehouse
from bqspool.loader.operate.doctor import Doctor, failed
from bqspool.schemas import load_schema_set

from .loader_support import BQSPOOL, Env

ROOT = Path(__file__).resolve().parent.parent


class Probe:
    """The local stack's facts through the real probe, with IAM answered as told (the
    emulators keep no IAM)."""

    def __init__(self, cfg, store, warehouse, granted=None):
        from bqspool.loader.backends.probes import GoogleProbe

        self.real = GoogleProbe(cfg, store, warehouse)
        self.granted = granted

    def __getattr__(self, name):
        return getattr(self.real, name)

    def bucket_grants(self, permissions):
        return None if self.granted is None else [p for p in permissions if p in self.granted]

    def dataset_grants(self, permissions, table):
        assert table in load_schema_set("eixa")  # a table of the set: BigQuery tests tables
        return self.bucket_grants(permissions)

    def project_grants(self, permissions, project):
        return self.bucket_grants(permissions)


class GoogleLike(Probe):
    """The local stack's facts, answered for the parts only Google has as ``facts`` say:
    the IAM Credentials API, Cloud KMS policies, a bucket's soft delete."""

    def __init__(self, cfg, store, warehouse, **facts):
        super().__init__(cfg, store, warehouse)
        self.facts = facts

    def local_stack(self):
        return {}

    def identity(self):
        return "runner@p.iam.gserviceaccount.com (project p)"

    def impersonation_error(self):
        return self.facts.get("impersonation_error")

    def key_users(self, keys):
        return self.facts.get("key_users")

    def bucket(self):
        found = self.real.bucket()
        return found and {**found, "soft_delete_s": self.facts.get("soft_delete_s")}


def doctor(env: Env, role="all", clock=time.time, granted=None, facts=None, **over):
    cfg = dataclasses.replace(env.config, **over)
    store, wh = make_object_store(cfg), make_warehouse(cfg)
    probe = Probe(cfg, store, wh, granted) if facts is None else GoogleLike(cfg, store, wh, **facts)
    checks = Doctor(cfg, role, probe, store=store, warehouse=wh, schemas=load_schema_set("eixa"), clock=clock).run()
    return {c.name: c for c in checks}, checks


def test_a_sound_setup_passes_every_check_from_the_command_line(stack, tmp_path):
    env = Env(tmp_path, "eixa")
    res = subprocess.run([BQSPOOL, "doctor", "--json"], env=env.env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    found = {c["name"]: c["status"] for c in json.loads(res.stdout)["checks"]}
    assert found == {
        "local stack": "ok",
        "credentials": "ok",
        "bucket": "ok",
        "permissions": "n/a",  # the emulator keeps no IAM: said, not failed
        "key": "n/a",  # no kms_key configured
        "clock": "ok",
        "dataset": "ok",
        "quota": "ok",
        "buffer": "ok",
    }
    shipper = subprocess.run(
        [BQSPOOL, "doctor", "--role", "ship"], env=env.env(), capture_output=True, text=True, timeout=120
    )
    assert shipper.returncode == 0 and "dataset" not in shipper.stdout and "buffer" in shipper.stdout


def test_a_missing_bucket_fails_with_its_fix_and_the_other_checks_still_run(stack, tmp_path):
    env = Env(tmp_path, "eixa")
    res = subprocess.run(
        [BQSPOOL, "doctor"], env=env.env(BQSPOOL_BUCKET="no-such-bucket-x"), capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    lines = res.stdout.splitlines()
    assert any(x.startswith("FAIL  bucket") and "no-such-bucket-x does not exist  -> create it" in x for x in lines)
    assert any(x.startswith("ok    dataset") for x in lines), res.stdout  # the rest was checked too


def test_a_location_apart_from_the_bucket_and_the_dataset_fails_both(stack, tmp_path):
    env = Env(tmp_path, "eixa")
    by, checks = doctor(env, location="EU")
    assert failed(checks)
    assert by["bucket"].status == "fail" and "load jobs run in EU" in by["bucket"].detail
    assert by["dataset"].status == "fail" and "not EU" in by["dataset"].detail


def test_missing_permissions_are_named_for_the_role(stack, tmp_path):
    env = Env(tmp_path, "eixa")
    by, checks = doctor(env, role="ship", granted=set(iam.SHIP_BUCKET))
    assert by["permissions"].status == "ok" and not failed(checks)
    by, checks = doctor(env, role="commit", granted=set(iam.SHIP_BUCKET))
    assert by["permissions"].status == "fail" and failed(checks)
    assert (
        "storage.objects.delete" in by["permissions"].detail
        and "storage.objects.create" not in by["permissions"].detail
    )
    everything = {*iam.COMMIT_BUCKET, *iam.COMMIT_DATASET, *iam.COMMIT_PROJECT}
    by, checks = doctor(env, role="commit", granted=everything)
    assert by["permissions"].status == "ok" and "bucket and dataset and project" in by["permissions"].detail
    by, checks = doctor(env, role="commit", granted=everything - {"bigquery.tables.updateData", "bigquery.jobs.create"})
    detail = by["permissions"].detail
    assert by["permissions"].status == "fail" and failed(checks)
    assert f"on dataset {env.dataset}: bigquery.tables.updateData" in detail, detail
    assert f"on project {env.config.project}: bigquery.jobs.create" in detail and "on bucket" not in detail


def test_a_skewed_clock_warns_then_fails(stack, tmp_path):
    env = Env(tmp_path, "eixa", max_clock_skew=30.0)
    by, _ = doctor(env, clock=lambda: time.time() + 20)
    assert by["clock"].status == "warn" and "s ahead of the storage server" in by["clock"].detail
    by, checks = doctor(env, clock=lambda: time.time() - 600)
    assert by["clock"].status == "fail" and "behind" in by["clock"].detail and failed(checks)
    assert "it will not commit" in by["clock"].detail


def test_a_disk_too_small_for_the_buffer_fails(stack, tmp_path, small_tmpfs):
    env = Env(tmp_path, "eixa", buffer=str(small_tmpfs / "spool" / "buffer.db"))
    by, checks = doctor(env, role="ship")
    assert by["buffer"].status == "fail" and "under the buffer's cap" in by["buffer"].detail and failed(checks)
    by, _ = doctor(env, role="ship", buffer_max_bytes=1024 * 1024)
    assert by["buffer"].status == "ok"


def test_the_deploy_guide_shows_the_permissions_doctor_tests():
    import re

    text = (ROOT / "docs" / "deploy.md").read_text()
    for role, places in iam.ROLES.items():
        (row,) = [line for line in text.splitlines() if line.startswith(f"| {role} | `storage")]
        cells = [set(re.findall(r"`([A-Za-z.]+)`", c)) for c in row.split("|")[2:5]]
        want = [set(places.get(on, ())) for on in ("bucket", "dataset", "project")]
        assert cells == want, (role, cells, want)


def test_the_status_page_shows_the_checks_as_a_panel(stack, tmp_path):
    from bqspool.loader.watch.statuspage import render

    env = Env(tmp_path, "eixa")
    _, checks = doctor(env, clock=lambda: time.time() - 600)
    page = {"tables": {}, "dataset": "p.d", "doctor": [c.as_dict() for c in checks]}
    text = render({"evaluated": time.time(), "active": {}}, page, 30)
    assert '<table id="doctor">' in text and '<tr class="check fail"><td>fail</td><td>clock</td>' in text
    assert text.count('<tr class="check ') == len(checks)


KEY_US = "projects/p/locations/us/keyRings/r/cryptoKeys/spool"
AGENTS = ["service-1@gs-project-accounts.iam.gserviceaccount.com", "bq-1@bigquery-encryption.iam.gserviceaccount.com"]


def test_a_key_outside_the_datasets_location_fails(stack, tmp_path):
    env = Env(tmp_path, "eixa")
    by, _ = doctor(env, kms_key=KEY_US)
    assert by["key"].status == "n/a" and "no Cloud KMS" in by["key"].detail  # the local stack has none
    by, checks = doctor(env, kms_key=KEY_US.replace("/us/", "/europe-west1/"))
    assert by["key"].status == "fail" and "europe-west1" in by["key"].detail and failed(checks)
    assert "use a key in the dataset's location" in by["key"].fix


def test_a_key_the_service_agents_cannot_use_is_named_with_the_grant(stack, tmp_path):
    env = Env(tmp_path, "eixa")
    granted = {"agents": AGENTS, KEY_US: AGENTS}
    by, _ = doctor(env, kms_key=KEY_US, facts={"key_users": granted})
    assert by["key"].status == "ok" and "usable by" in by["key"].detail
    by, _ = doctor(env, kms_key=KEY_US, facts={"key_users": {"agents": AGENTS, KEY_US: AGENTS[:1]}})
    assert by["key"].status == "warn" and f"{AGENTS[1]} on {KEY_US}" in by["key"].detail
    assert AGENTS[0] not in by["key"].detail and "cryptoKeyEncrypterDecrypter" in by["key"].fix
    by, _ = doctor(env, kms_key=KEY_US, facts={"key_users": {"error": f"{KEY_US}: HTTP 403 denied"}})
    assert by["key"].status == "warn" and "HTTP 403" in by["key"].detail


def test_impersonation_that_is_refused_fails_with_the_role_to_grant(stack, tmp_path):
    env = Env(tmp_path, "eixa")
    account = "loader@p.iam.gserviceaccount.com"
    refused = "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
    by, checks = doctor(env, impersonate_service_account=account, facts={"impersonation_error": refused})
    assert by["credentials"].status == "fail" and failed(checks)
    assert refused in by["credentials"].detail and account in by["credentials"].detail
    assert (
        by["credentials"].fix
        == f"grant roles/iam.serviceAccountTokenCreator on {account} to runner@p.iam.gserviceaccount.com"
    )
    by, _ = doctor(env, impersonate_service_account=account, facts={})
    assert by["credentials"].status == "ok" and f"acting as {account}" in by["credentials"].detail
    by, _ = doctor(env, impersonate_service_account=account)  # the local stack takes no credentials
    assert by["credentials"].status == "ok" and "not used against it" in by["credentials"].detail


def test_soft_delete_is_priced_at_the_prefixs_volume(stack, tmp_path):
    """The bytes staged in the last week (the commit log's loads), a seventh a day, each
    billed the retention's days more: the figure is checked against the staged objects."""
    import os

    env = Env(tmp_path, "eixa")
    with Buffer(env.config.buffer, "eixa") as buf:
        for i in range(3000):
            buf.append(
                "tasks",
                {"user_id": "u", "task_id": str(i), "description": os.urandom(400).hex(), "created_at": time.time()},
            )
    drainer = env.drainer()
    drainer.ship_once()
    staged = sum(o.size for o in make_object_store(env.config).list_objects(f"{env.config.prefix}/staged/"))
    assert staged > 2**20
    drainer.commit_once()
    by, _ = doctor(env, facts={"soft_delete_s": 7 * 86_400})
    assert by["bucket"].status == "warn" and "7 days (soft delete)" in by["bucket"].detail
    daily_mib = f"{staged / 7 / 2**20:,.1f} MiB"
    assert daily_mib in by["bucket"].detail, (daily_mib, by["bucket"].detail)
    assert "$0.14 per GiB a day" in by["bucket"].detail and "turn soft delete off" in by["bucket"].fix
    by, _ = doctor(env, facts={})
    assert by["bucket"].status == "ok" and "no soft delete" in by["bucket"].detail
