"""`bqspool doctor`: each check passes on a sound setup, and each failure is produced on
purpose and said with its fix: on the local stack where it can be, on a fake probe
for what the emulators cannot do (IAM)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

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


def doctor(env: Env, role="all", clock=time.time, granted=None, **over):
    cfg = dataclasses.replace(env.config, **over)
    store, wh = make_object_store(cfg), make_warehouse(cfg)
    probe = Probe(cfg, store, wh, granted)
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
