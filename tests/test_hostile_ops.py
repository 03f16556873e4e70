"""The operating tools under a hostile run: a table changed by hand, a restore beside a
running committer, absurd arguments, secrets in output, and the status server under
slow clients and without its token."""

import base64
import datetime as dt
import json
import os
import socket
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from bqspool.loader.layout import Layout
from bqspool.loader.operate.restore import Restore, parse_day
from bqspool.loader.operate.verify import drift, fix
from bqspool.loader.settings import Settings
from bqspool.loader.testing import MemoryObjectStore, MemoryWarehouse
from bqspool.loader.watch.statuspage import StatusServer
from bqspool.schemas import load_schema_set
from bqspool.schemas.errors import BackendError, ConfigError, LeaseHeldError

from .loader_support import BQSPOOL, Env

EIXA = load_schema_set("eixa")


def cli(env: Env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BQSPOOL, *args], env=env.env(), capture_output=True, text=True, timeout=300)


# -- verify against a table changed by hand --------------------------------------------


def test_verify_reports_every_drift_even_when_the_audit_cannot_count(stack, tmp_path):
    env = Env(tmp_path, "eixa")
    env.query("ALTER TABLE {ds}.tasks DROP COLUMN description")
    env.query("ALTER TABLE {ds}.tasks ADD COLUMN added_by_hand STRING")
    env.query("ALTER TABLE {ds}.routines DROP COLUMN created_at")  # the audit's partition filter names it
    res = cli(env, "verify")
    assert res.returncode == 7 and "Traceback" not in res.stderr, res.stderr
    assert "drift  tasks: column description" in res.stdout and "added_by_hand" in res.stdout
    assert "drift  routines: column created_at" in res.stdout
    assert "audit  routines: could not count" in res.stdout
    assert "audit  tasks:" in res.stdout  # the other tables are counted
    fixed = cli(env, "verify", "--fix", "--no-audit")
    assert "fixed  tasks: add column description" in fixed.stdout and fixed.returncode == 7, fixed.stdout


def test_a_fix_that_fails_says_what_it_changed_before(tmp_path):
    store = MemoryObjectStore()
    wh = MemoryWarehouse(store, EIXA)
    for table in ("tasks", "routines"):
        for name in [f.name for f in EIXA[table].fields if not f.required][:1]:
            del wh.tables[table].columns[name]
    found = drift(wh, EIXA)
    assert len([d for d in found if d.fix]) == 2
    real, calls = wh.add_column, []

    def add_column(table, column):
        calls.append(table)
        if len(calls) == 2:
            raise BackendError("403 the warehouse refused the second change")
        real(table, column)

    wh.add_column = add_column
    told: list[str] = []
    with pytest.raises(BackendError):
        fix(wh, EIXA, found, on_fixed=told.append)
    assert len(told) == 1 and told[0].startswith(calls[0])


# -- restore -----------------------------------------------------------------------------


def test_an_absurd_number_of_days_is_a_clear_error():
    with pytest.raises(ConfigError, match="before year 1"):
        parse_day("99999999d", dt.date(2026, 12, 4))
    assert parse_day("3d", dt.date(2026, 12, 4)) == dt.date(2026, 12, 1)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def _restore(store, wh, commit, clock, wait_s=60.0):
    return Restore(
        store,
        wh,
        EIXA,
        Layout("p"),
        "tasks",
        dt.date(2026, 11, 28),
        dt.date(2026, 11, 28),
        commit=commit,
        progress=False,
        poll_s=5,
        wait_s=wait_s,
        clock=clock,
        sleep=clock.sleep,
    )


def _archived(store, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {
        "_event_id": ["e1", "e2"],
        "user_id": ["u", "u"],
        "task_id": ["t1", "t2"],
        "created_at": pa.array([dt.datetime(2026, 11, 28, tzinfo=dt.UTC)] * 2, pa.timestamp("us", "UTC")),
    }
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table(rows), path)
    name = "p/archive/tasks/2026/11/28/tasks-buf-000000000001-000000000001-0123456789abcdef0123-n2.parquet"
    store.put(name, path.read_bytes())


def test_restore_beside_a_running_committer_takes_the_lease_when_it_frees(tmp_path):
    """It used to poll for ever: a running commit never loads what was staged after it began."""
    from bqspool.loader.commit.committer import Committer

    store, clock = MemoryObjectStore(), Clock()
    wh = MemoryWarehouse(store, EIXA)
    wh.tables["tasks"].rows.clear()
    _archived(store, tmp_path)
    held = {"tries": 0}

    def commit(on_loaded):
        held["tries"] += 1
        if held["tries"] <= 3:  # another committer holds the lease for three polls
            raise LeaseHeldError("another committer (elsewhere) holds p/committer.lease; it expires in 20s")
        return Committer(store, wh, Settings(prefix="p"), on_loaded=on_loaded).commit_once()

    report = _restore(store, wh, commit, clock).run()
    assert report.loaded_objects == 1 and len(wh.fetch_rows("tasks")) == 2
    assert "after another committer" in report.committed_by and clock.now == 15


def test_restore_gives_up_waiting_with_what_to_do(tmp_path):
    store, clock = MemoryObjectStore(), Clock()
    wh = MemoryWarehouse(store, EIXA)
    _archived(store, tmp_path)
    wh.tables["tasks"].rows.clear()

    def commit(on_loaded):
        raise LeaseHeldError("another committer (stuck) holds p/committer.lease")

    with pytest.raises(LeaseHeldError, match="run this restore again") as err:
        _restore(store, wh, commit, clock, wait_s=30).run()
    assert "kept the lease for 30s" in str(err.value) and clock.now >= 30
    assert [n for n in store.objects if "/staged/tasks/" in n]  # the copies wait for the next commit


# -- secrets --------------------------------------------------------------------------------


def test_config_show_never_prints_a_secret_whole(tmp_path):
    secret = "https://hooks.example/services/T000/B000/verysecrettoken"
    env = {**os.environ, "BQSPOOL_MONITOR_WEBHOOK": secret, "BQSPOOL_MONITOR_TOKEN": "s3cr3t-page-token"}
    for args in (["config", "show"], ["config", "show", "--json"]):
        out = subprocess.run([BQSPOOL, *args], env=env, capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "verysecrettoken" not in out.stdout and "s3cr3t" not in out.stdout
        assert "https://hooks.example/***" in out.stdout


def test_the_logs_never_print_a_secret(caplog):
    import logging

    from bqspool.loader import logs

    logs.redact("https://hooks.example/services/T/B/tok3n")
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "posting to %s failed", ("https://hooks.example/services/T/B/tok3n",), None
    )
    assert logs._REDACT.filter(record) and "tok3n" not in record.getMessage()


# -- the status server --------------------------------------------------------------------------


def _get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_status_server_binds_to_loopback_and_asks_for_its_token():
    server = StatusServer(":0", lambda: b"# metrics\n", token="t0ken").start()
    try:
        assert server.address.startswith("http://127.0.0.1:")
        assert _get(server.address)[0] == 401 and _get(server.address + "metrics")[0] == 401
        assert _get(server.address, {"Authorization": "Bearer wrong"})[0] == 401
        assert _get(server.address + "metrics", {"Authorization": "Bearer t0ken"}) == (200, b"# metrics\n")
        basic = base64.b64encode(b"anyone:t0ken").decode()
        assert _get(server.address, {"Authorization": f"Basic {basic}"})[0] == 200
        assert _get(server.address + "healthz")[0] == 503  # open for health checks: no cycle yet
    finally:
        server.stop()


def test_slow_clients_hold_no_more_threads_than_the_pool():
    server = StatusServer("127.0.0.1:0", lambda: b"", workers=4, idle_timeout=30).start()
    host, port = server.server.server_address[:2]
    idle = []
    try:
        before = threading.active_count()
        for _ in range(60):  # connect, say nothing
            idle.append(socket.create_connection((host, port)))
        time.sleep(0.2)
        assert threading.active_count() <= before + 4
        assert _get(server.address + "healthz")[0] == 503  # turned away at once: the pool is busy
    finally:
        for s in idle:
            s.close()
        server.stop()


def test_the_monitor_state_file_is_owner_only(tmp_path):
    from bqspool.loader.watch.cycle import save_state

    path = tmp_path / "state" / "monitor.json"
    path.parent.mkdir()
    path.write_text("{}")
    os.chmod(path, 0o644)  # as an earlier version left it
    save_state(path, {"active": {}})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and json.loads(path.read_text()) == {"active": {}}


def test_a_stopping_monitor_sends_nothing_more_and_keeps_it(tmp_path):
    from bqspool.loader.backends.webhook import Webhook
    from bqspool.loader.retry import RetryPolicy

    attempts = []
    stopping = threading.Event()
    hook = Webhook("http://127.0.0.1:9/hook", retry=RetryPolicy(0.01, 0.02, 60), should_stop=stopping.is_set)
    real_post = __import__("requests").post

    def post(*a, **kw):
        attempts.append(1)
        stopping.set()  # SIGTERM arrives during the first attempt
        return real_post(*a, **kw)

    import requests

    requests.post, saved = post, requests.post
    try:
        assert hook.send({"status": "firing", "alert": {}}) is False
    finally:
        requests.post = saved
    assert attempts == [1]  # no retry once told to stop, whatever the deadline
