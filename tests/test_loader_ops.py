"""Outages, poison batches, quota, the lease, setup, config and scheduling."""

import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from bqspool.buffer import Buffer
from bqspool.buffer.store import connect, now_us
from bqspool.loader.backends import localstack
from bqspool.loader.clients import make_object_store
from bqspool.loader.commit.commitlog import Record
from bqspool.loader.config import load_config
from bqspool.loader.layout import Layout
from bqspool.loader.progress import Progress
from bqspool.loader.ship import buffer_lease, ledger
from bqspool.loader.ship import quarantine as holdback
from bqspool.schemas.errors import BackendUnavailableError, ConfigError, LeaseHeldError

from .events import make_event
from .loader_support import BQSPOOL, Env, append_in_calls, assert_exactly_once


def fill(env, counts, seed=0):
    rng = random.Random(seed)
    out = {}
    with Buffer(env.config.buffer, env.config.schemas, strict=True, durability="normal") as buf:
        for stream, n in counts.items():
            out[stream] = append_in_calls(buf, stream, [make_event(env.schemas[stream], rng) for _ in range(n)])
    return out


class StopServerAfter:
    """Wraps the real object store or warehouse and stops the real server on the n-th call of ``method``."""

    def __init__(self, inner, method, n, service, folder):
        self.inner, self.method, self.n, self.service, self.folder = inner, method, n, service, folder
        self.calls = 0

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        def wrapped(*a, **kw):
            self.calls += 1
            if self.calls == self.n:
                localstack.stop_service(self.service, self.folder)
            return attr(*a, **kw)

        return wrapped


@pytest.mark.parametrize("service,method,n", [("gcs", "upload", 3), ("bigquery", "start_load", 2)])
def test_outage_mid_drain_then_redrain(stack, tmp_path, service, method, n):
    env = Env(tmp_path, "eixa", batch_rows=25, batch_per_job=2)
    appended = fill(env, {"user_interactions": 150, "tasks": 50})
    drainer = env.drainer()
    attr = "objects" if service == "gcs" else "warehouse"
    stopping = StopServerAfter(getattr(drainer.committer, attr), method, n, service, stack["folder"])
    for stage in (drainer.shipping, drainer.committer):
        setattr(stage, attr, stopping)
    try:
        with pytest.raises(BackendUnavailableError):
            drainer.drain_once()
        # The buffer keeps accepting events while the backend is down.
        more = fill(env, {"user_interactions": 40}, seed=1)
        appended["user_interactions"] += more["user_interactions"]
        with pytest.raises(BackendUnavailableError):
            env.drainer().drain_once()
    finally:
        localstack.start_service(service, stack["folder"])
    report = env.drainer().drain_once()
    assert report.quarantined == []
    assert_exactly_once(env, appended)


def test_drain_exit_code_when_backend_stays_down(stack, tmp_path):
    env = Env(tmp_path, "eixa")
    fill(env, {"tasks": 5})
    localstack.stop_service("bigquery", stack["folder"])
    try:
        res = env.drain_cli()
    finally:
        localstack.start_service("bigquery", stack["folder"])
    assert res.returncode == 3, res.stderr
    assert "unavailable" in res.stderr and "nothing was lost" in res.stderr
    # BigQuery's outage does not stop the host: its events are shipped, waiting in the bucket.
    assert env.pending() == 0 and len(env.bucket("staged")) == 1
    assert env.drain_cli().returncode == 0 and env.bucket("staged") == []


def test_poison_batch_is_quarantined_while_others_load(stack, tmp_path):
    env = Env(tmp_path, "eixa", batch_per_job=10)
    appended = fill(env, {"tasks": 30, "user_interactions": 30})
    # Someone alters the table out from under the loader.
    env.query("ALTER TABLE {ds}.tasks DROP COLUMN updated_at")
    res = env.drain_cli()
    assert res.returncode == 6, res.stderr
    assert "quarantined" in res.stderr and "bqspool quarantine retry" in res.stderr
    assert env.bq_ids("user_interactions") and set(env.bq_ids("user_interactions")) == set(
        appended["user_interactions"]
    )
    listed = subprocess.run([BQSPOOL, "quarantine", "list", "--json"], env=env.env(), capture_output=True, text=True)
    held = json.loads(listed.stdout)
    assert len(held) == 1 and held[0]["table"] == "tasks" and held[0]["area"] == "quarantine"
    assert "both halves" in held[0]["reason"] and "rejected by load job" in held[0]["reason"]
    # The operator fixes the table, then retries: the batch loads once.
    env.query("ALTER TABLE {ds}.tasks ADD COLUMN updated_at TIMESTAMP")
    subprocess.run([BQSPOOL, "quarantine", "retry"], env=env.env(), check=True, capture_output=True)
    res = env.drain_cli()
    assert res.returncode == 0, res.stderr
    assert_exactly_once(env, appended)


def test_dropping_a_quarantined_batch_moves_each_event_to_dead_letters(tmp_path):

    path = tmp_path / "b.db"
    with Buffer(path, "eixa", durability="normal") as buf:
        ids = buf.append_many("tasks", [{"user_id": "u", "task_id": str(i), "created_at": 0} for i in range(7)])
        ids += [buf.append("tasks", {"user_id": "u", "task_id": "7", "created_at": 0})]
    conn = sqlite3.connect(path, isolation_level=None)
    buffer_id = conn.execute("SELECT value FROM meta WHERE key = 'buffer_id'").fetchone()[0]
    ledger.prepare(conn)
    assert ledger.seal(conn, "tasks", buffer_id, Layout("p"), 1000, 1 << 30) == 1
    (batch,) = ledger.batches(conn)
    ledger.quarantine(conn, batch.batch_id, "invalid: no such column")
    assert holdback.drop(conn, [batch.batch_id]) == (1, 8)
    dead = conn.execute("SELECT event_id, payload, reason FROM dead_letters ORDER BY id").fetchall()
    assert [d[0] for d in dead] == ids
    assert [json.loads(d[1])["task_id"] for d in dead] == [str(i) for i in range(8)]
    assert all("no such column" in d[2] for d in dead)
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    assert conn.execute("SELECT value FROM counters WHERE name = 'pending_bytes'").fetchone()[0] == 0
    assert ledger.batches(conn)[0].state == "dropped"


def test_poison_inside_a_group_is_isolated(stack, tmp_path):
    """A group of batches fails: each loads alone, and only the bad one is narrowed down further."""
    env = Env(tmp_path, "eixa", batch_rows=10, batch_per_job=10)
    fill(env, {"tasks": 50})
    clock = [time.time()]
    drainer = env.drainer(clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    real = drainer.committer.warehouse
    bad_uri = {}

    class FailOneBatch:
        # The emulator cannot reject one file of a job; inject the data error for the job holding it.
        def __getattr__(self, name):
            return getattr(real, name)

        def start_load(self, job_id, table, uris):
            bad_uri.setdefault("uri", uris[2] if len(uris) > 2 else None)
            if bad_uri["uri"] in uris:
                from bqspool.loader.interfaces import JobError, JobOutcome

                return JobOutcome(job_id, True, JobError("data", "invalid", "bad row in file"))
            return real.start_load(job_id, table, uris)

        def get_job(self, job_id):
            return real.get_job(job_id)

    drainer.committer.warehouse = FailOneBatch()
    report = drainer.drain_once()
    # The group's job fails, so each object is loaded alone: four load; the
    # fifth, whose own job is rejected too, is loaded in halves (which this
    # stand-in accepts: it rejects that one file only).
    assert report.quarantined == [] and report.events_loaded == 50
    assert env.batch_states() == {"shipped": 5}
    halves = [k for k in env.archived() if "~" in k]  # archived: the halves' rows, by their keys
    assert len(halves) == 2 and {k.rpartition("~")[2] for k in halves} == {"a5", "b5"}
    (split,) = env.bucket("split")
    assert halves[0].partition("~")[0] in split  # the half's batch digest names the object it was split from


def test_quota_budget_defers_and_groups(stack, tmp_path):
    env = Env(tmp_path, "eixa", batch_rows=10, batch_per_job=1, quota_jobs_per_table_day=3)
    fill(env, {"tasks": 60})
    report = env.drainer().drain_once()
    assert report.jobs_submitted == 3 and report.events_loaded == 30
    assert "tasks" in report.deferred
    # Every host ships regardless: the rest waits in the bucket for the budget.
    assert env.pending() == 0 and len(env.bucket("staged")) == 3
    again = env.drainer().drain_once()
    assert again.jobs_submitted == 0 and "budget" in again.deferred["tasks"]
    shown = subprocess.run([BQSPOOL, "status"], env=env.env(), capture_output=True, text=True).stdout
    commit_stage = shown.split("commit stage (the bucket):")[1]
    row = next(line for line in commit_stage.splitlines() if line.startswith("tasks "))
    assert row.split()[1:4] == ["3", row.split()[2], "3/3"] and "(deferring loads)" in row
    stats = json.loads(
        subprocess.run([BQSPOOL, "status", "--json"], env=env.env(), capture_output=True, text=True).stdout
    )
    tasks = stats["commit"]["tables"]["tasks"]
    assert tasks["jobs_24h"] == 3 and tasks["budget"] == 3 and tasks["waiting"] == 3 and tasks["oldest_age_s"] >= 0
    assert stats["loader"]["batches"] == {"shipped": 6}
    # Near the budget, everything waiting goes into one job. The budget is
    # counted from the commit log: plant 8 records of earlier commits there.
    env2 = Env(tmp_path / "two", "eixa", batch_rows=10, batch_per_job=1, quota_jobs_per_table_day=10)
    fill(env2, {"tasks": 60})
    store = make_object_store(env2.config)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    for i in range(8):
        record = Record("tasks", f"old{i}", 0, (f"{env2.config.prefix}/staged/tasks/{day}/gone{i}.parquet",))
        store.write_object(f"{env2.config.prefix}/commit-archive/tasks/{day}/old{i}-0.json", record.to_json(), 0)
    report = env2.drainer().drain_once()
    assert report.jobs_submitted == 1 and report.events_loaded == 60


def test_lease_keeps_two_loaders_apart(stack, tmp_path):
    env = Env(tmp_path, "eixa", lease_seconds=2)
    appended = fill(env, {"tasks": 20})
    conn = connect(env.config.buffer)
    ledger.prepare(conn)
    # A live loader elsewhere, with a lease far longer than a drain takes to start.
    _elsewhere = buffer_lease.acquire_lease(conn, "otherhost:1:abc", 600, Path(env.config.buffer))
    with pytest.raises(LeaseHeldError, match="another loader"):
        env.drainer().drain_once()
    res = env.drain_cli()
    assert res.returncode == 4 and "another loader" in res.stderr
    assert env.pending() == 20
    # That loader died, and its lease ran out: the clock moved past its expiry.
    conn.execute("UPDATE lease SET expires_us = ? WHERE name = 'drain'", (now_us() - 1,))
    assert env.drainer().drain_once().events_loaded == 20
    # Concurrent drainers on one buffer: one at a time, everything once.
    more = fill(env, {"tasks": 30, "user_interactions": 30}, seed=2)
    procs = [
        subprocess.Popen([BQSPOOL, "drain", "--once"], env=env.env(), stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    codes = [p.wait(60) for p in procs]
    assert set(codes) <= {0, 4} and 0 in codes
    env.drain_cli()
    appended["tasks"] += more["tasks"]
    appended["user_interactions"] = more["user_interactions"]
    assert_exactly_once(env, appended)
    conn.close()


def test_setup_is_idempotent_and_evolves_tables(stack, tmp_path):
    schemas = tmp_path / "set"
    schemas.mkdir()
    table = {
        "fields": [{"name": "user_id", "type": "STRING", "mode": "REQUIRED"}, {"name": "ts", "type": "TIMESTAMP"}],
        "time_partitioning": {"field": "ts"},
        "clustering": ["user_id"],
    }
    (schemas / "things.json").write_text(json.dumps(table))
    env = Env(tmp_path, schemas)
    run = lambda: subprocess.run([BQSPOOL, "setup"], env=env.env(), capture_output=True, text=True)
    first = run()
    assert first.returncode == 0 and "created" not in first.stdout  # Env already created it
    table["fields"].append({"name": "score", "type": "FLOAT"})
    (schemas / "things.json").write_text(json.dumps(table))
    added = run()
    assert added.returncode == 0 and "added column things.score" in added.stdout
    with Buffer(env.config.buffer, schemas) as buf:
        buf.append("things", {"user_id": "u", "ts": 1, "score": 1.5})
    env.drainer().drain_once()
    assert env.query("SELECT score FROM {ds}.things") == [{"score": 1.5}]
    assert "added" not in run().stdout
    table["fields"][2]["type"] = "STRING"
    table["fields"].append({"name": "must", "type": "STRING", "mode": "REQUIRED"})
    (schemas / "things.json").write_text(json.dumps(table))
    bad = run()
    assert bad.returncode == 1
    assert "things.score: type is FLOAT in BigQuery, STRING in the schema set" in bad.stderr
    assert "things.must: a new REQUIRED column cannot be added" in bad.stderr


def test_config_file_env_and_show(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bqspool.toml").write_text(
        'project = "p1"\ndataset = "d1"\nschedule = "*/5 * * * *"\n[batch]\nrows = 1000\n[quota]\njobs_per_table_day = 50\n'
    )
    env = {"BQSPOOL_DATASET": "d2"}
    cfg = load_config(env=env)
    assert (cfg.project, cfg.dataset, cfg.batch_rows, cfg.quota_jobs_per_table_day) == ("p1", "d2", 1000, 50)
    assert cfg.sources["project"].endswith("bqspool.toml") and cfg.sources["dataset"] == "BQSPOOL_DATASET"
    assert cfg.sources["bucket"] == "default" and cfg.schedule_seconds() is None
    assert load_config(env={"BQSPOOL_SCHEDULE": "90s"}).schedule_seconds() == 90
    for bad_env, msg in [
        ({"BQSPOOL_BATCH_ROWS": "lots"}, "batch_rows"),
        ({"BQSPOOL_SCHEDULE": "sometimes"}, "schedule"),
        ({"BQSPOOL_BATCH_PER_JOB": "20000"}, "10,000"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            load_config(env=bad_env)
    (tmp_path / "bad.toml").write_text("colour = 'red'\n")
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_config(tmp_path / "bad.toml", env={})
    with pytest.raises(ConfigError, match="missing setting"):
        load_config(env={}).require("bucket")
    out = subprocess.run(
        [BQSPOOL, "config", "show", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("BQSPOOL_")}, **env},
    )
    shown = json.loads(out.stdout)
    assert shown["dataset"] == {"value": "d2", "source": "BQSPOOL_DATASET"}
    assert shown["batch_rows"]["value"] == 1000


def test_run_drains_on_schedule_and_stops_on_sigterm(stack, tmp_path):
    env = Env(tmp_path, "eixa")
    appended = fill(env, {"tasks": 10})
    proc = subprocess.Popen([BQSPOOL, "run"], env=env.env(BQSPOOL_SCHEDULE="1s"), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while env.pending() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert env.pending() == 0
        more = fill(env, {"tasks": 7}, seed=3)
        deadline = time.monotonic() + 30
        while env.pending() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert env.pending() == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    err = proc.stderr.read()
    assert code == 0, err
    # At the default level: the banner and one line a cycle at info; no warnings, no scheduler's own.
    lines = err.splitlines()
    assert any(" INFO bqspool.loader: bqspool run --role all: " in x for x in lines), err
    assert any(" INFO bqspool.loader: ship: 10 events in 1 batch " in x for x in lines), err
    assert sum(" INFO bqspool.loader: ship: " in x for x in lines) >= 2, err  # a line each cycle
    assert not [x for x in lines if " WARNING " in x or "apscheduler" in x], err
    appended["tasks"] += more["tasks"]
    # `pending == 0` means shipped; a stop between a ship and its commit leaves
    # objects waiting in the bucket, for the next commit.
    assert env.committer().commit_once() is not None
    assert_exactly_once(env, appended)


def test_local_stack_cli(tmp_path):
    folder = tmp_path / "local"
    up = subprocess.run([BQSPOOL, "local", "up", "--dir", str(folder)], capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        assert f'`eval "$(bqspool local env --dir {folder})"`' in up.stderr  # the hint works as printed
        names = {line.split("=")[0].removeprefix("export ") for line in up.stdout.splitlines()}
        assert names == {
            "STORAGE_EMULATOR_HOST",
            "BIGQUERY_EMULATOR_HOST",
            "BQSPOOL_PROJECT",
            "BQSPOOL_BUCKET",
            "BQSPOOL_DATASET",
            "BQSPOOL_LOCATION",
        }
        again = subprocess.run([BQSPOOL, "local", "env", "--dir", str(folder)], capture_output=True, text=True)
        assert again.stdout == up.stdout
        state = localstack.load_state(folder)
        assert localstack._alive(state.gcs_pid) and localstack._alive(state.bq_pid)
    finally:
        down = subprocess.run([BQSPOOL, "local", "down", "--dir", str(folder)], capture_output=True, text=True)
    assert down.returncode == 0
    assert not localstack._alive(state.gcs_pid) and not localstack._alive(state.bq_pid)


def test_local_stack_ephemeral_keeps_tables_in_memory(tmp_path, monkeypatch):
    from bqspool.loader.backends.google_clients import bigquery_client
    from bqspool.loader.clients import make_warehouse
    from google.api_core.exceptions import NotFound

    folder = tmp_path / "local"
    up = subprocess.run(
        [BQSPOOL, "local", "up", "--ephemeral", "--dir", str(folder)], capture_output=True, text=True, timeout=120
    )
    try:
        assert up.returncode == 0, up.stderr
        state = localstack.load_state(folder)
        assert state.persistent is False
        assert b"--ephemeral" in open(f"/proc/{state.bq_pid}/cmdline", "rb").read()
        other = subprocess.run(
            [BQSPOOL, "local", "up", "--dir", str(folder)], capture_output=True, text=True, timeout=120
        )
        assert other.returncode != 0 and "ephemeral" in other.stderr and "local down" in other.stderr
        for k, v in state.env().items():
            monkeypatch.setenv(k, v)
        config = load_config(env=state.env())
        make_warehouse(config).ensure_dataset()
        client = bigquery_client(config)
        assert client.get_dataset(config.dataset).dataset_id == config.dataset
        localstack.stop_service("bigquery", folder)
        localstack.start_service("bigquery", folder)  # comes back ephemeral, and empty
        assert b"--ephemeral" in open(f"/proc/{localstack.load_state(folder).bq_pid}/cmdline", "rb").read()
        with pytest.raises(NotFound):
            client.get_dataset(config.dataset)
    finally:
        subprocess.run([BQSPOOL, "local", "down", "--dir", str(folder)], capture_output=True, text=True)


def test_progress_lines_when_not_a_terminal(caplog):
    with caplog.at_level(logging.INFO, "bqspool.loader"):
        p = Progress(1000, enabled=True, every_s=0)
        p.advance(400)
        p.advance(600)
        p.close()
    assert "shipping: 400 of 1,000 events" in caplog.text and "shipping: 1,000 of 1,000 events" in caplog.text


def test_load_jobs_are_paced_per_table(stack, tmp_path):
    """At most 5 load jobs per 10 s per table: the drain waits (on an injected clock) rather than
    collect rateLimitExceeded failures that still count against the quota."""
    env = Env(tmp_path, "eixa", batch_rows=10, batch_per_job=1)
    appended = fill(env, {"tasks": 70, "user_interactions": 20})
    slept = [0.0]  # the commit log's times are the bucket's: a wall clock, moved on by each wait
    waits = []

    def sleep(seconds):
        waits.append(round(seconds, 3))
        slept[0] += seconds

    report = env.drainer(clock=lambda: time.time() + slept[0], sleep=sleep).drain_once()
    assert report.jobs_submitted == 9
    # tasks has 7 jobs: the 6th waits out the window (less the moments the
    # first jobs took in real time); the 7th finds it clear again.
    assert len(waits) == 1 and 9.0 < waits[0] <= 10.0
    assert_exactly_once(env, appended)


def test_every_load_is_submitted_before_the_drain_waits_for_any(stack, tmp_path):
    """BigQuery runs load jobs asynchronously; the drain starts them all, then waits, so jobs of
    different tables run side by side. The emulator finishes a job inside its insert call, so a
    wrapper reports each real job as still running until the drain waits for it."""
    from bqspool.loader.interfaces import JobOutcome

    env = Env(tmp_path, "eixa", batch_rows=20, batch_per_job=2)
    appended = fill(env, {"user_interactions": 60, "tasks": 40, "emotional_memories": 30})
    drainer = env.drainer()
    real = drainer.committer.warehouse
    calls = []

    class StillRunning:
        def __getattr__(self, name):
            return getattr(real, name)

        def get_job(self, job_id):
            outcome = real.get_job(job_id)
            if outcome is not None and ("wait", job_id) not in calls:
                return JobOutcome(job_id, False)  # submitted, not finished yet
            return outcome

        def start_load(self, job_id, table, uris):
            calls.append(("start", job_id))
            real.start_load(job_id, table, uris)
            return JobOutcome(job_id, False)

        def wait(self, job_id, **kw):
            calls.append(("wait", job_id))
            return real.wait(job_id, **kw)

    drainer.committer.warehouse = StillRunning()
    report = drainer.drain_once()
    starts = [i for i, (kind, _) in enumerate(calls) if kind == "start"]
    waits = [i for i, (kind, _) in enumerate(calls) if kind == "wait"]
    # 3 tables: 2 + 1 + 1 load jobs of up to 2 batches of 20.
    assert report.jobs_submitted == len(starts) == len(waits) == 4
    assert max(starts) < min(waits)
    assert sorted(j for k, j in calls if k == "start") == sorted(j for k, j in calls if k == "wait")
    assert report.events_loaded == 130
    assert_exactly_once(env, appended)


def test_waiting_for_a_running_job_polls_soon_then_less_often():
    """BigQuery keeps a load job RUNNING for seconds; the emulator never does, so a stand-in client
    reports RUNNING a number of times. Polls start at 0.1 s and double to 2 s; a deadline stops them."""
    from types import SimpleNamespace

    from bqspool.loader.backends.bq import BigQueryWarehouse
    from bqspool.loader.retry import RetryPolicy

    class Client:
        def __init__(self, running):
            self.running, self.calls = running, 0

        def get_job(self, job_id, **kw):
            self.calls += 1
            state = "RUNNING" if self.calls <= self.running else "DONE"
            return SimpleNamespace(job_id=job_id, state=state, error_result=None, output_rows=5)

    now = [0.0]
    sleeps = []

    def sleep(s):
        sleeps.append(round(s, 3))
        now[0] += s

    wh = BigQueryWarehouse(Client(7), "p", "d", "US", RetryPolicy(), clock=lambda: now[0], sleep=sleep)
    outcome = wh.wait("job1")
    assert outcome.done and outcome.output_rows == 5
    assert sleeps == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]

    sleeps.clear()
    wh = BigQueryWarehouse(Client(10**6), "p", "d", "US", RetryPolicy(), clock=lambda: now[0], sleep=sleep)
    outcome = wh.wait("job2", timeout=5.0)
    assert not outcome.done
    assert sleeps == [0.1, 0.2, 0.4, 0.8, 1.6, 1.9]  # the last wait ends at the deadline


def test_a_sigterm_as_run_starts_stops_it(stack, tmp_path):
    """A SIGTERM while the scheduler submitted its first tick deadlocked on the executor's
    lock (the handler shut the scheduler down from the main thread that held it): the
    process hung for good, 2 times in 6. Each run here must exit, with its last ship."""
    env = Env(tmp_path, "eixa")
    fill(env, {"tasks": 5})
    for _ in range(6):
        proc = subprocess.Popen([BQSPOOL, "run", "--role", "ship"], env=env.env(), stderr=subprocess.PIPE, text=True)
        banner = proc.stderr.readline()
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)  # a hang, not a slow machine: it exits in a second
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("bqspool run hung after a SIGTERM at its start: " + banner + proc.communicate()[1])
        assert proc.returncode == 0 and "on the way out" in err, banner + err
    assert env.pending() == 0
