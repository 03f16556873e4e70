"""The loader under stalls, clones, poison and a full disk: never double, never strand.

Each test reproduces a way an earlier loader lost or doubled data, on the
real local stack through the real clients.
"""

import json
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest
from bqspool.buffer import Buffer, DiskFullError
from bqspool.loader.config import load_config
from bqspool.schemas.errors import ConfigError

from .events import make_event
from .loader_support import (
    BQSPOOL,
    Env,
    append_in_calls,
    assert_exactly_once,
    wait_buffer_lease_expired,
    wait_stopped,
)
from .stored import sqlite_utils_db

SECRET = "PAYLOAD-MARKER-7f3e"


def fill(env, counts, seed=0, schemas=None):
    rng = random.Random(seed)
    out = {}
    with Buffer(env.config.buffer, schemas or env.config.schemas, strict=True, durability="normal") as buf:
        for stream, n in counts.items():
            out[stream] = append_in_calls(buf, stream, [make_event(env.schemas[stream], rng) for _ in range(n)])
    return out


def counters(env):
    conn = sqlite3.connect(env.config.buffer)
    try:
        return dict(conn.execute("SELECT name, value FROM counters"))
    finally:
        conn.close()


# -- 1. a loader that lost its lease ------------------------------------------


def test_a_loader_paused_past_its_lease_stops_and_nothing_is_doubled(stack, tmp_path):
    # A 10-s lease, to outlast the start of a second drain on a busy machine.
    env = Env(tmp_path, "eixa", batch_rows=20, batch_per_job=2, lease_seconds=10)
    appended = fill(env, {"tasks": 100, "user_interactions": 100})
    a = env.paused("drain", "--once", fault="after_stage:1:stop")
    try:
        held = env.drain_cli()
        assert held.returncode == 4 and "another loader" in held.stderr  # A is alive and its lease runs
        wait_buffer_lease_expired(env.config.buffer)  # ... until it expires: then another may take over
        b = env.drain_cli()
        assert b.returncode == 0, b.stderr
        assert_exactly_once(env, appended)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    _, err = a.communicate(timeout=120)
    assert a.returncode == 4 and "lost its drain lease" in err, err
    assert_exactly_once(env, appended)
    assert "quarantined" not in env.batch_states()
    # The operator's usual next steps find nothing to redo.
    retry = subprocess.run([BQSPOOL, "quarantine", "retry"], env=env.env(), capture_output=True, text=True)
    assert retry.returncode == 0 and retry.stdout.startswith("0 batches")
    shipped = [b for b in sqlite_utils_db(env.config.buffer)["batches"].rows if b["state"] == "shipped"]
    drop = subprocess.run(
        [BQSPOOL, "quarantine", "drop", shipped[0]["batch_id"]], env=env.env(), capture_output=True, text=True
    )
    assert drop.returncode == 2 and "not held back" in drop.stderr  # a shipped batch is never dropped
    again = env.drain_cli("--json")
    assert again.returncode == 0 and json.loads(again.stdout)["events_loaded"] == 0
    assert_exactly_once(env, appended)
    assert counters(env)["pending_bytes"] == 0


def test_renewing_never_retakes_a_lease_that_changed_hands(stack, tmp_path):
    from bqspool.loader.layout import Layout
    from bqspool.loader.ship import buffer_lease, ledger
    from bqspool.schemas.errors import LeaseLostError

    env = Env(tmp_path, "eixa")
    fill(env, {"tasks": 5})
    conn = sqlite3.connect(env.config.buffer, isolation_level=None)
    path = Path(env.config.buffer)
    ledger.prepare(conn)
    mine = buffer_lease.acquire_lease(conn, "a", 0.01, path)
    buffer_lease.release_lease(conn, mine)
    with pytest.raises(LeaseLostError):
        buffer_lease.renew_lease(conn, mine, 10)  # released: renewing must not take it again
    time.sleep(0.02)
    theirs = buffer_lease.acquire_lease(conn, "b", 10, path)
    assert theirs.token == mine.token + 1
    with pytest.raises(LeaseLostError, match="held by b"):
        ledger.seal(conn, "tasks", "x" * 16, Layout("p"), 10, 1 << 20, mine)
    assert not ledger.batches(conn)
    buffer_lease.release_lease(conn, theirs)
    conn.close()


def test_two_loaders_in_separate_pid_namespaces(stack, tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    env = Env(tmp_path, "eixa", batch_rows=20, batch_per_job=2, lease_seconds=60)
    appended = fill(env, {"tasks": 60, "user_interactions": 60})

    def in_namespace(**extra):
        # A shell is the namespace's pid 1 (which ignores SIGSTOP); the loader is its child.
        return subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", f"{BQSPOOL} drain --once; exit $?"],
            env=env.env(**extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def children(pid):
        return [
            int(k) for k in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        ]

    a = in_namespace(BQSPOOL_FAULT="after_upload:1:stop")
    try:
        deadline = time.monotonic() + 30
        loader = None
        while loader is None and time.monotonic() < deadline:
            shells = children(a.pid)
            kids = children(shells[0]) if shells else []
            loader = kids[0] if kids else None
            time.sleep(0.02)
        assert loader is not None
        wait_stopped(loader)
        b = in_namespace()
        _, err = b.communicate(timeout=60)
        assert b.returncode == 4 and "another loader" in err, err  # A is alive, though B cannot see its pid
        os.kill(loader, signal.SIGKILL)  # now A dies: B need not wait out its 60 s lease
        a.wait(30)
        b = in_namespace()
        out, err = b.communicate(timeout=120)
        assert b.returncode == 0, err
    finally:
        if a.poll() is None:
            a.kill()
    assert_exactly_once(env, appended)


# -- 2. a copied buffer file ----------------------------------------------------


def test_a_copied_buffer_file_loses_nothing_on_either_host(stack, tmp_path):
    x = Env(tmp_path / "x", "eixa", batch_rows=1000)
    with Buffer(x.config.buffer, "eixa"):
        pass  # created once, then copied: baked into an image, restored from a snapshot
    y = Env(tmp_path / "y", "eixa", batch_rows=1000, dataset=x.dataset, prefix=x.config.prefix)
    for suffix in ("", "-wal", "-shm"):
        src = Path(x.config.buffer + suffix)
        if src.exists():
            shutil.copy(src, y.config.buffer + suffix)
    from_x = fill(x, {"tasks": 40}, seed=1)
    from_y = fill(y, {"tasks": 40}, seed=2)
    assert x.drain_cli().returncode == 0
    res = y.drain_cli()
    assert res.returncode == 0, res.stderr
    assert_exactly_once(x, {"tasks": from_x["tasks"] + from_y["tasks"]})
    assert y.pending() == 0


# -- 3. a batch that cannot be staged -------------------------------------------


def _schema_without(tmp_path, table, column):
    folder = tmp_path / "narrower"
    shutil.copytree(Path(__file__).parents[1] / "schemas" / "sets" / "eixa", folder)
    body = json.loads((folder / f"{table}.json").read_text())
    body["fields"] = [f for f in body["fields"] if f["name"] != column]
    (folder / f"{table}.json").write_text(json.dumps(body))
    return folder


def test_a_column_removed_under_pending_events_quarantines_that_batch_only(stack, tmp_path):
    narrower = _schema_without(tmp_path, "tasks", "duration_minutes")
    env = Env(tmp_path, narrower)
    rng = random.Random(3)
    with Buffer(env.config.buffer, "eixa", strict=True) as buf:  # written by the app's older schema set
        tasks = buf.append_many(
            "tasks",
            [dict(make_event(buf.schemas["tasks"], rng), duration_minutes=5, description=SECRET) for _ in range(20)],
        )
        other = buf.append_many(
            "user_interactions", [make_event(buf.schemas["user_interactions"], rng) for _ in range(20)]
        )
    res = env.drain_cli()
    assert res.returncode == 6, res.stderr
    assert "cannot be staged" in res.stderr and "Traceback" not in res.stderr and SECRET not in res.stderr
    assert set(env.bq_ids("user_interactions")) == set(other)  # the healthy stream drained
    held = json.loads(
        subprocess.run([BQSPOOL, "quarantine", "list", "--json"], env=env.env(), capture_output=True, text=True).stdout
    )
    assert [(h["where"], h["table"]) for h in held] == [("buffer", "tasks")] and SECRET not in json.dumps(held)
    # Dropping it keeps every event, as a dead letter, with the bytes counted right.
    drop = subprocess.run([BQSPOOL, "quarantine", "drop", held[0]["id"]], env=env.env(), capture_output=True, text=True)
    assert drop.returncode == 0 and "20 events" in drop.stdout
    dead = sqlite3.connect(env.config.buffer).execute("SELECT event_id FROM dead_letters").fetchall()
    assert {d[0] for d in dead} == set(tasks)
    assert counters(env)["pending_bytes"] == 0


@pytest.mark.parametrize("flip", ["invalid UTF-8", "broken JSON"])
def test_a_damaged_stored_row_quarantines_its_batch_without_printing_it(stack, tmp_path, flip):
    env = Env(tmp_path, "eixa")
    rng = random.Random(4)
    with Buffer(env.config.buffer, "eixa", strict=True) as buf:
        buf.append_many("tasks", [dict(make_event(buf.schemas["tasks"], rng), description=SECRET) for _ in range(30)])
        other = buf.append_many(
            "user_interactions", [make_event(buf.schemas["user_interactions"], rng) for _ in range(30)]
        )
    conn = sqlite3.connect(env.config.buffer)
    seq, payload = conn.execute("SELECT seq, CAST(payload AS BLOB) FROM events WHERE stream = 'tasks'").fetchone()
    i = payload.index(SECRET.encode())
    damaged = payload[:i] + (b"\xff" if flip == "invalid UTF-8" else b'"') + payload[i + 1 :]
    with conn:
        conn.execute("UPDATE events SET payload = CAST(? AS TEXT) WHERE seq = ?", (damaged, seq))
    assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"  # invisible to SQLite's own check
    conn.close()
    res = env.drain_cli()
    assert res.returncode == 6 and "cannot be staged" in res.stderr, res.stderr
    assert SECRET not in res.stderr and "Traceback" not in res.stderr
    assert set(env.bq_ids("user_interactions")) == set(other)


# -- 3b. a load job that rejects one row ------------------------------------------

PLACES = {"fields": [{"name": "id", "type": "STRING", "mode": "REQUIRED"}, {"name": "g", "type": "GEOGRAPHY"}]}


def _places(tmp_path):
    folder = tmp_path / "geo"
    folder.mkdir()
    (folder / "places.json").write_text(json.dumps(PLACES))
    return folder


def _poison_one(env, position, value):
    """Put a value append would refuse into one stored event, as an older
    writer (or a damaged disk) could have left it."""
    conn = sqlite3.connect(env.config.buffer)
    seq, payload = conn.execute("SELECT seq, payload FROM events ORDER BY seq").fetchone()
    lines = payload.split("\n")
    row = json.loads(lines[position])
    row["g"] = value
    lines[position] = json.dumps(row, separators=(",", ":"))
    new = "\n".join(lines)
    with conn:
        conn.execute("UPDATE events SET payload = ?, nbytes = ? WHERE seq = ?", (new, len(new.encode()), seq))
        conn.execute(
            "UPDATE counters SET value = value + ? WHERE name = 'pending_bytes'",
            (len(new.encode()) - len(payload.encode()),),
        )
    conn.close()
    return row["_event_id"]


@pytest.mark.parametrize("crash", [None, "after_split:2"])
def test_one_bad_geography_costs_only_itself(stack, tmp_path, crash):
    env = Env(tmp_path, _places(tmp_path), quota_jobs_per_table_10s=100)
    with Buffer(env.config.buffer, env.config.schemas, strict=True) as buf:
        ids = buf.append_many("places", [{"id": str(i), "g": f"POINT({i % 180} {i % 90})"} for i in range(1000)])
    bad = _poison_one(env, 637, "NOT A GEOGRAPHY")
    if crash:
        res = env.drain_cli(fault=crash)
        assert res.returncode == -signal.SIGKILL, res.stderr
    res = env.drain_cli("--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["quarantined"] == [] and (crash or report["dead_lettered"] == 1)
    got = env.bq_ids("places")
    assert set(got) == set(ids) - {bad} and all(n == 1 for n in got.values())
    assert env.pending() == 0
    dead = env.dead_in_bucket()
    assert list(dead) == [bad] and "rejected by load job" in dead[bad]
    assert counters(env)["pending_bytes"] == 0


# -- 4. a full disk --------------------------------------------------------------


def test_a_full_disk_drains_and_makes_room(stack, tmp_path, small_tmpfs):
    env = Env(tmp_path, "eixa", buffer=str(small_tmpfs / "buffer.db"))
    rng = random.Random(5)
    ids = []
    with Buffer(env.config.buffer, "eixa", strict=True, durability="normal") as buf:
        with pytest.raises(DiskFullError):
            for _ in range(10_000):
                ids += buf.append_many(
                    "tasks", [dict(make_event(buf.schemas["tasks"], rng), description="x" * 2000) for _ in range(20)]
                )
    assert len(ids) > 500
    res = env.drain_cli()
    assert res.returncode == 0, res.stderr
    assert_exactly_once(env, {"tasks": ids})
    with Buffer(env.config.buffer, "eixa", strict=True) as buf:  # room again
        more = buf.append_many("tasks", [make_event(buf.schemas["tasks"], rng) for _ in range(100)])
    assert env.drain_cli().returncode == 0
    assert_exactly_once(env, {"tasks": ids + more})
    assert Path(env.config.buffer + ".reserve").exists()  # put back for next time


def test_drain_on_a_disk_that_stays_full_exits_retryable(stack, tmp_path, small_tmpfs):
    env = Env(tmp_path, "eixa", buffer=str(small_tmpfs / "buffer.db"))
    fill(env, {"tasks": 20})
    Path(env.config.buffer + ".reserve").unlink()
    with open(small_tmpfs / "filler", "wb") as fh:  # someone else fills the disk to the last byte
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    res = env.drain_cli()
    assert res.returncode == 3 and "disk is full" in res.stderr and "nothing was lost" in res.stderr, res.stderr
    (small_tmpfs / "filler").unlink()
    assert env.drain_cli().returncode == 0 and env.pending() == 0


# -- 5. smaller defects -------------------------------------------------------------


def test_staged_files_are_owner_only_after_a_crash(stack, tmp_path):
    env = Env(tmp_path, "eixa")
    fill(env, {"tasks": 20})
    assert env.drain_cli(fault="after_stage").returncode == -signal.SIGKILL
    staging = Path(env.config.buffer + ".staging")
    files = list(staging.iterdir())
    assert files and stat.S_IMODE(staging.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert env.drain_cli().returncode == 0 and env.pending() == 0


@pytest.mark.parametrize(
    "name,value,words",
    [
        ("prefix", "../../../../tmp/x", "prefix"),
        ("prefix", "a/b=c/d", "prefix"),
        ("prefix", "/abs", "prefix"),
        ("prefix", "a/./b", "prefix"),
        ("bucket", "Bad_Bucket", "bucket"),
        ("bucket", "a..b", "bucket"),
        ("bucket", "x", "bucket"),
        ("dataset", "my-dataset", "dataset"),
        ("dataset", "a.b", "dataset"),
    ],
)
def test_names_that_would_misroute_data_are_refused(name, value, words):
    with pytest.raises(ConfigError, match=words):
        load_config(env={f"BQSPOOL_{name.upper()}": value})


def test_a_bad_prefix_fails_the_cli_before_anything_is_written(tmp_path):
    res = subprocess.run(
        [BQSPOOL, "drain", "--once"],
        capture_output=True,
        text=True,
        env=dict(os.environ, BQSPOOL_PREFIX="../../../../tmp/x", BQSPOOL_BUFFER=str(tmp_path / "b.db")),
    )
    assert res.returncode == 1 and "prefix" in res.stderr and not (tmp_path / "b.db").exists()


def test_good_names_pass():
    cfg = load_config(
        env={
            "BQSPOOL_PREFIX": "team-a/bqspool_v2",
            "BQSPOOL_BUCKET": "my.spool-bucket_1",
            "BQSPOOL_DATASET": "analytics_2026",
        }
    )
    assert cfg.prefix == "team-a/bqspool_v2"


def test_a_retried_insert_looks_the_job_up_first(stack, tmp_path):
    from google.api_core import exceptions as gexc

    env = Env(tmp_path, "eixa")
    appended = fill(env, {"tasks": 30})
    drainer = env.drainer()
    client = drainer.committer.warehouse.client
    real = client.load_table_from_uri
    calls = []

    def insert_then_time_out(*a, **kw):
        calls.append(kw.get("job_id"))
        job = real(*a, **kw)
        if len(calls) == 1:
            job.result()
            raise gexc.ServiceUnavailable("the answer was lost on the way back")
        return job

    client.load_table_from_uri = insert_then_time_out
    report = drainer.drain_once()
    assert report.events_loaded == 30 and calls == calls[:1]  # no second insert: the lookup found the job
    assert_exactly_once(env, appended)


def test_a_stream_without_a_table_is_a_distinct_exit_and_shows_in_status(stack, tmp_path):
    narrower = tmp_path / "only_tasks"
    narrower.mkdir()
    shutil.copy(Path(__file__).parents[1] / "schemas" / "sets" / "eixa" / "tasks.json", narrower)
    env = Env(tmp_path, narrower)
    rng = random.Random(6)
    with Buffer(env.config.buffer, "eixa", strict=True) as buf:
        buf.append_many("user_interactions", [make_event(buf.schemas["user_interactions"], rng) for _ in range(7)])
        tasks = buf.append_many("tasks", [make_event(buf.schemas["tasks"], rng) for _ in range(5)])
    res = env.drain_cli()
    assert res.returncode == 5 and "'user_interactions' has 7 pending events but no table" in res.stderr
    assert set(env.bq_ids("tasks")) == set(tasks)
    status = subprocess.run([BQSPOOL, "status"], env=env.env(), capture_output=True, text=True)
    assert "user_interactions" in status.stdout and "no table in schema set" in status.stdout
