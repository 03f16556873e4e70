"""A fleet on the real stack: many hosts ship, one committer loads, exactly once.

Hosts are real processes appending and shipping in-process (tests/fleet_host.py),
committers are `bqspool commit --once` processes; both are killed with
kill -9 at random and at step boundaries, stopped past their lease, and run
through outages. The commit log's rule is also tested on the fakes, with
an interleaving no real process can be made to produce on demand.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from bqspool.buffer import Buffer
from bqspool.loader.backends import localstack
from bqspool.loader.commit.commitlog import LogReader, Record
from bqspool.loader.commit.committer import Committer
from bqspool.loader.commit.report import CommitReport
from bqspool.loader.drain import Drainer
from bqspool.loader.layout import Layout
from bqspool.loader.settings import Settings
from bqspool.loader.testing import MemoryObjectStore, MemoryWarehouse
from bqspool.schemas import load_schema_set

from . import stored
from .events import make_event
from .loader_support import BQSPOOL, Env, append_in_calls, wait_bucket_lease_expired

ROOT = Path(__file__).resolve().parent.parent
STREAMS = ("user_interactions", "tasks")


def start_host(env: Env, i: int, seed: int, **kw) -> subprocess.Popen:
    buffer, ids = env.tmp / f"host{i}.db", env.tmp / f"host{i}.ids"
    args = [sys.executable, "-m", "tests.fleet_host", str(buffer), str(ids), "--seed", str(seed)]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    proc = subprocess.Popen(
        args,
        env=env.env(BQSPOOL_BUFFER=str(buffer)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", (
        proc.stderr.read() if proc.stderr else ""
    )
    return proc


def acknowledged(env: Env, hosts: range) -> dict[str, list[str]]:
    """The ids each host wrote down after its append returned, per stream."""
    out: dict[str, list[str]] = {s: [] for s in STREAMS}
    for i in hosts:
        path = env.tmp / f"host{i}.ids"
        for line in path.read_text().splitlines() if path.exists() else []:
            parts = line.split()
            if len(parts) == 2 and parts[0] in out:
                out[parts[0]].append(parts[1])
    return out


def check_fleet(env: Env, acked: dict[str, list[str]], hosts: range, unacked_allowance: int = 0) -> None:
    """Every acknowledged id once in BigQuery, nothing doubled; each host's buffer and the staged area empty.

    An event can be stored and then its host killed before it wrote the id
    down: up to ``unacked_allowance`` loaded ids may be unknown to the test.
    """
    extra = 0
    for table, ids in acked.items():
        got = env.bq_ids(table)
        missing = set(ids) - set(got)
        doubled = {k: n for k, n in got.items() if n > 1}
        assert not missing, f"{table}: {len(missing)} acknowledged events missing"
        assert not doubled, f"{table}: {len(doubled)} events loaded more than once"
        extra += len(set(got) - set(ids))
    assert extra <= unacked_allowance, extra
    for i in hosts:
        assert stored.pending_events(env.tmp / f"host{i}.db") == 0
    assert env.bucket("staged") == [] and env.bucket("commits") == []


def commit_cli(env: Env, fault: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    extra = {"BQSPOOL_FAULT": fault} if fault else {}
    return subprocess.run(
        [BQSPOOL, "commit", "--once", "--json"], env=env.env(**extra), capture_output=True, text=True, timeout=timeout
    )


def ship_cli(env: Env, buffer: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BQSPOOL, "ship", "--once"],
        env=env.env(BQSPOOL_BUFFER=str(buffer)),
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- many hosts, one committer, everything killed --------------------------------------


def test_six_hosts_and_a_committer_killed_at_random_load_everything_once(stack, tmp_path):
    # Sized to what fake-gcs-server serves on 2 cores (about 45 requests a
    # second): each host ships a few objects a second, the committer keeps up.
    env = Env(tmp_path, "eixa", batch_rows=400, batch_per_job=50, lease_seconds=5, quota_jobs_per_table_10s=100)
    rng = random.Random(14)
    hosts = {i: start_host(env, i, seed=i, interval=2.0) for i in range(6)}
    host_kills = committer_kills = 0
    try:
        # Once at every step boundary of the commit, while the hosts ship.
        for point in ("after_record", "after_submit", "after_job_done", "after_archive"):
            time.sleep(0.7)
            res = commit_cli(env, fault=point)
            assert res.returncode == -signal.SIGKILL, (point, res.stderr)
        # Then at random: hosts and committers alike, for 45 rounds (about a minute)
        # or 20 committers killed midway, whichever comes first: a commit with
        # little to do often ends before its kill.
        for _ in range(45):
            if committer_kills >= 20:
                break
            if rng.random() < 0.4:
                victim = rng.randrange(6)
                hosts[victim].kill()
                hosts[victim].wait()
                host_kills += 1
                hosts[victim] = start_host(env, victim, seed=1000 * host_kills + victim, interval=2.0)
            proc = subprocess.Popen(
                [BQSPOOL, "commit", "--once"], env=env.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            time.sleep(rng.uniform(0.4, 1.6))  # past its start-up, into its work (or done: a short commit)
            if proc.poll() is None:
                proc.kill()
                committer_kills += 1
            proc.wait(60)
    finally:
        for p in hosts.values():
            p.kill()
            p.wait()
    # A clean finish: each host's buffer shipped, then one commit.
    for i in range(6):
        res = ship_cli(env, tmp_path / f"host{i}.db")
        assert res.returncode == 0, res.stderr
    res = commit_cli(env)
    assert res.returncode == 0, res.stderr
    acked = acknowledged(env, range(6))
    assert sum(len(v) for v in acked.values()) > 1000
    assert committer_kills >= 3 and host_kills >= 2, (committer_kills, host_kills)
    check_fleet(env, acked, range(6), unacked_allowance=5 * (host_kills + 6))


# -- committers whose clocks disagree -------------------------------------------------------


def _skewed_committers(env: Env, offsets: dict[str, str], seconds: float, seed: int) -> dict[str, list[str]]:
    """Run ``bqspool run --role commit`` under faketime at each offset, each killed with
    kill -9 every 1 to 3 s and started again, for ``seconds``; what each said."""
    import shutil

    if shutil.which("faketime") is None:
        pytest.fail("faketime is missing: scripts/bootstrap.sh installs Debian's faketime package")
    rng = random.Random(seed)
    said: dict[str, list[str]] = {k: [] for k in offsets}

    def start(offset: str) -> subprocess.Popen:
        cmd = [BQSPOOL, "run", "--role", "commit"]
        if offset != "0":
            cmd = ["faketime", "-f", offset, *cmd]
        # A session of its own: faketime runs the command as its child, and kill -9 is for both.
        return subprocess.Popen(
            cmd,
            env=env.env(BQSPOOL_SCHEDULE="1s"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    procs = {k: start(k) for k in offsets}
    until = time.monotonic() + seconds
    try:
        while time.monotonic() < until:
            time.sleep(rng.uniform(1.0, 3.0))
            victim = rng.choice(list(procs))
            said[victim].append(_kill9(procs[victim]))
            procs[victim] = start(victim)
    finally:
        for k, p in procs.items():
            said[k].append(_kill9(p))
    return said


def _kill9(proc: subprocess.Popen) -> str:
    """kill -9 the process and whatever it started; what it said."""
    with contextlib.suppress(ProcessLookupError):  # it ended by itself
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.communicate(timeout=30)[1]


@pytest.mark.parametrize("allowed", [False, True], ids=["skew-refused", "skew-allowed"])
def test_committers_ten_minutes_apart_never_load_anything_twice(stack, tmp_path, allowed):
    """Committers at 0, +10 min and -10 min, killed every few seconds, while a host ships:
    3,954 of 196,324 events were loaded twice. Refused, the skewed ones say why and
    commit nothing; allowed (max_clock_skew raised), the lease on the store's clock
    keeps them apart and every record is closed only once its objects are archived."""
    skew = "3600" if allowed else "30"
    env = Env(
        tmp_path,
        "eixa",
        batch_rows=50,
        batch_per_job=20,
        lease_seconds=6,
        quota_jobs_per_table_10s=100,
        max_clock_skew=float(skew),
    )
    host = start_host(env, 0, seed=21, interval=0.5)
    try:
        said = _skewed_committers(env, {"0": [], "+10m": [], "-10m": []}, seconds=25, seed=3)
    finally:
        host.send_signal(signal.SIGTERM)  # its last ship takes everything it acknowledged
        host.wait(30)
    res = commit_cli(env)
    assert res.returncode == 0, res.stderr
    acked = acknowledged(env, range(1))
    assert sum(len(v) for v in acked.values()) > 200
    check_fleet(env, acked, range(1))
    skewed = "".join(said["+10m"] + said["-10m"])
    if allowed:
        assert "not committing" not in skewed
    else:
        # The store's Date header has a resolution of one second: 599 to 601 s.
        assert re.search(r"\b(599|600|601)s ahead of the storage server's", skewed), skewed
        assert "not committing" in skewed
        assert re.search(r"\b(599|600|601)s behind the storage server's", skewed), skewed


# -- two committers -----------------------------------------------------------------------


def _records(env: Env) -> list[dict]:
    from bqspool.loader.clients import make_object_store

    store = make_object_store(env.config)
    out = []
    for o in store.list_objects(f"{env.config.prefix}/commit-archive/"):
        doc = json.loads(store.read_object(o.name).data)
        if "holder" in doc:  # a closed record's summary (or, from earlier versions, the record)
            out.append({**doc, "created": o.created})
    return out


def test_two_committers_started_together_never_overlap_and_load_once(stack, tmp_path):
    env = Env(tmp_path, "eixa", batch_rows=15, batch_per_job=2, quota_jobs_per_table_10s=100)
    appended: dict[str, list[str]] = {s: [] for s in STREAMS}
    rng = random.Random(5)
    for rnd in range(6):
        with Buffer(env.config.buffer, "eixa", strict=True, durability="normal") as buf:
            for s in STREAMS:
                appended[s] += append_in_calls(buf, s, [make_event(env.schemas[s], rng) for _ in range(40)])
        shipped = ship_cli(env, Path(env.config.buffer))
        assert shipped.returncode == 0 and "(stage " in shipped.stderr and "upload " in shipped.stderr, shipped.stderr
        procs = [
            subprocess.Popen([BQSPOOL, "commit", "--once"], env=env.env(), stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        codes = [p.wait(120) for p in procs]
        errors = [p.stderr.read() for p in procs if p.stderr]
        assert set(codes) <= {0, 4} and 0 in codes, (rnd, codes, errors)
    assert commit_cli(env).returncode == 0
    check_fleet_single = {t: ids for t, ids in appended.items()}
    for table, ids in check_fleet_single.items():
        got = env.bq_ids(table)
        assert set(got) == set(ids) and max(got.values()) == 1
    # Never both at once: each committer's records were written within its own
    # stretch of time, and no two stretches overlap.
    spans: dict[str, list[float]] = {}
    for r in _records(env):
        spans.setdefault(r["holder"], []).append(r["created"])
    ordered = sorted((min(t), max(t)) for t in spans.values())
    assert len(ordered) >= 6
    assert all(a[1] < b[0] for a, b in zip(ordered, ordered[1:])), ordered


def test_a_committer_stopped_past_its_lease_loads_nothing_twice(stack, tmp_path):
    # A 10-s lease: the stopped committer's must outlast the start of a second
    # `bqspool commit` even on a busy machine; then the test waits for it to run out.
    env = Env(tmp_path, "eixa", batch_rows=20, batch_per_job=2, lease_seconds=10, quota_jobs_per_table_10s=100)
    rng = random.Random(8)
    with Buffer(env.config.buffer, "eixa", strict=True) as buf:
        appended = {s: append_in_calls(buf, s, [make_event(env.schemas[s], rng) for _ in range(80)]) for s in STREAMS}
    assert ship_cli(env, Path(env.config.buffer)).returncode == 0
    a = env.paused("commit", "--once", fault="after_record:1:stop")
    try:
        held = commit_cli(env)
        assert held.returncode == 4 and "another committer" in held.stderr  # alive, and its lease runs
        wait_bucket_lease_expired(env)
        b = commit_cli(env)  # takes over, and finishes the record A wrote
        assert b.returncode == 0, b.stderr
    finally:
        os.kill(a.pid, signal.SIGCONT)
    _, err = a.communicate(timeout=120)
    assert a.returncode == 4 and "lost its lease" in err, err
    assert commit_cli(env).returncode == 0
    for table, ids in appended.items():
        got = env.bq_ids(table)
        assert set(got) == set(ids) and max(got.values()) == 1
    assert env.bucket("staged") == [] and env.bucket("commits") == []


# -- outages ---------------------------------------------------------------------------------


def test_hosts_keep_buffering_without_gcs_and_keep_shipping_without_bigquery(stack, tmp_path):
    env = Env(tmp_path, "eixa", batch_rows=30)
    rng = random.Random(2)
    buffer = Path(env.config.buffer)
    appended: dict[str, list[str]] = {s: [] for s in STREAMS}

    def append(n):
        with Buffer(buffer, "eixa", strict=True) as buf:
            for s in STREAMS:
                appended[s] += append_in_calls(buf, s, [make_event(env.schemas[s], rng) for _ in range(n)])

    append(50)
    localstack.stop_service("gcs", stack["folder"])
    try:
        res = ship_cli(env, buffer)
        assert res.returncode == 3 and "nothing was lost" in res.stderr
        append(20)  # the app goes on: its buffer takes everything
        assert stored.pending_events(buffer) == 140
    finally:
        localstack.start_service("gcs", stack["folder"])
    localstack.stop_service("bigquery", stack["folder"])
    try:
        res = ship_cli(env, buffer)
        assert res.returncode == 0, res.stderr  # BigQuery is no business of a host's
        assert stored.pending_events(buffer) == 0 and len(env.bucket("staged")) >= 6
        append(10)
        assert ship_cli(env, buffer).returncode == 0
        res = commit_cli(env)
        assert res.returncode == 3 and "nothing was lost" in res.stderr
    finally:
        localstack.start_service("bigquery", stack["folder"])
    res = commit_cli(env)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["events_loaded"] == 160 and report["waiting"] == {"tasks": 0, "user_interactions": 0}
    for table, ids in appended.items():
        got = env.bq_ids(table)
        assert set(got) == set(ids) and max(got.values()) == 1


# -- serverless hosts ------------------------------------------------------------------------


@pytest.mark.parametrize("own_handler", [False, True])
def test_sigterm_ships_every_acknowledged_event_before_the_app_exits(stack, tmp_path, own_handler):
    env = Env(tmp_path, "eixa", batch_rows=200)
    mark = tmp_path / "app-handler-ran"
    kw = {"own_handler": mark} if own_handler else {}
    app = start_host(env, 0, seed=3, interval=3600, **kw)  # only SIGTERM ships
    time.sleep(1.5)
    started = time.monotonic()
    app.send_signal(signal.SIGTERM)
    code = app.wait(30)
    took = time.monotonic() - started
    _, err = app.communicate()
    # The app's own handler ran after the shipper's; without one, the default ended it.
    assert code == (0 if own_handler else -signal.SIGTERM), err
    assert mark.exists() == own_handler
    assert "SIGTERM: shipped" in err and took < 8.0
    buffer = tmp_path / "host0.db"
    assert stored.pending_events(buffer) == 0  # everything acknowledged was in the bucket before it exited
    acked = acknowledged(env, range(1))
    assert sum(len(v) for v in acked.values()) > 50
    res = commit_cli(env)
    assert res.returncode == 0, res.stderr
    check_fleet(env, acked, range(1))


def test_a_second_sigterm_waits_for_the_first_ones_ship(stack, tmp_path):
    """Two SIGTERMs 0.3 s apart: the second used to cancel the last ship (0 of 1.5 M shipped)."""
    env = Env(tmp_path, "eixa", batch_rows=20_000)
    rng = random.Random(9)
    backlog = [make_event(env.schemas["tasks"], rng) for _ in range(500)]
    with Buffer(tmp_path / "host0.db", "eixa", durability="normal") as buf:
        for _ in range(240):  # 120,000 events: a last ship that outlasts the 0.3 s between the signals
            buf.append_many("tasks", backlog)
    app = start_host(env, 0, seed=4, interval=3600)  # only SIGTERM ships
    app.send_signal(signal.SIGTERM)
    time.sleep(0.05)  # well inside the last ship of 120,000 events
    app.send_signal(signal.SIGTERM)
    code = app.wait(30)
    _, err = app.communicate()
    assert code == -signal.SIGTERM, err
    assert "SIGTERM again" in err and "SIGTERM: shipped" in err, err
    assert stored.pending_events(tmp_path / "host0.db") == 0  # the first ship finished, then the process went
    assert commit_cli(env).returncode == 0
    assert sum(env.bq_ids("tasks").values()) >= 120_000


def test_a_shipper_started_off_the_main_thread_refuses_instead_of_losing_the_buffer(tmp_path):
    """From a worker thread, as frameworks' startup hooks do, SIGTERM used to kill the
    process with every event unshipped and no word. Now start() says how to do it."""
    import threading

    from bqspool.loader import Shipper
    from bqspool.loader.ship.report import ShipReport
    from bqspool.schemas.errors import ConfigError

    class Idle:  # a drainer with nothing to ship: this test is about start() alone
        def ship_once(self, deadline=None, due_only=False):
            return ShipReport()

    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _start(Shipper(tmp_path / "b.db", drainer=Idle()), errors))
    t.start()
    t.join()
    (err,) = errors
    assert isinstance(err, ConfigError) and "main thread" in str(err) and "handle_signals=False" in str(err)
    ok: list[BaseException] = []
    quiet = Shipper(tmp_path / "b.db", drainer=Idle(), interval=3600, handle_signals=False)
    t = threading.Thread(target=lambda: _start(quiet, ok))
    t.start()
    t.join()
    assert ok == [] and quiet._thread is not None and quiet._thread.is_alive()
    quiet._stop.set()


def _start(shipper, errors: list) -> None:
    try:
        shipper.start()
    except BaseException as exc:
        errors.append(exc)


def test_run_role_ship_ships_nothing_before_it_is_due_and_everything_on_sigterm(stack, tmp_path):
    env = Env(tmp_path, "eixa")
    rng = random.Random(9)
    with Buffer(env.config.buffer, "eixa", strict=True) as buf:
        early = buf.append_many("tasks", [make_event(env.schemas["tasks"], rng) for _ in range(5)])
    proc = subprocess.Popen(
        [BQSPOOL, "run", "--role", "ship"],
        env=env.env(BQSPOOL_SHIP_MAX_DELAY="1h", BQSPOOL_SHIP_CHECK="0.2s"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2)  # ten looks: nothing is an hour old, nor fills an object
        assert env.bucket("staged") == [] and stored.pending_events(env.config.buffer) == 5
        with Buffer(env.config.buffer, "eixa", strict=True) as buf:
            late = buf.append_many("tasks", [make_event(env.schemas["tasks"], rng) for _ in range(25)])
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 0, err
    assert "shipped 30 events on the way out" in err and stored.pending_events(env.config.buffer) == 0
    assert commit_cli(env).returncode == 0
    assert set(early + late) == set(env.bq_ids("tasks"))


# -- the commit log's rule, on the fakes --------------------------------------------------------


def test_of_two_overlapping_records_only_the_older_is_ever_submitted(tmp_path):
    """Committer B lists the log before A's record exists, then (paused past its
    renewal, so the lease cannot stop it) writes an overlapping record: its
    check before submitting finds A's older claim and makes its record void."""
    schemas = load_schema_set("eixa")
    store = MemoryObjectStore()
    warehouse = MemoryWarehouse(store, schemas)
    with Buffer(tmp_path / "b.db", schemas, strict=True) as buf:
        ids = [buf.append("tasks", make_event(schemas["tasks"], random.Random(i))) for i in range(3)]
    Drainer(tmp_path / "b.db", schemas, store, None, Settings(batch_rows=1), progress=False).ship_once()
    names = sorted(n for n in store.objects if "/staged/" in n)
    assert len(names) == 3
    a, b = Committer(store, warehouse), Committer(store, warehouse)
    for c in (a, b):
        c._renew = lambda: None  # both past their renewal, as a paused committer may be
    rec_a = a._create(Record("tasks", "aaaa", 0, (names[0], names[1]), holder="A"))
    rec_b = b._create(Record("tasks", "bbbb", 0, (names[1], names[2]), holder="B"))
    report = CommitReport()
    assert b.jobs.start("tasks", rec_b, None, report) is None and report.voided == 1
    outcome = a.jobs.start("tasks", rec_a, None, report)
    assert outcome is not None and a.jobs.end(rec_a, outcome, report) == "done"
    assert warehouse.inserts == [rec_a.job_id]
    # The void record frees o2 for the next commit; o1 is claimed by A's done record.
    a._renew = lambda: None
    log = LogReader(store, Layout("bqspool")).table("tasks")
    assert log.outcome(rec_b.key) == "void" and log.outcome(rec_a.key) == "done"
    Committer(store, warehouse).commit_once()
    assert warehouse.ids("tasks") == Counter({i: 1 for i in ids})
    assert [n for n in store.objects if "/staged/" in n or "/commits/" in n] == []


def test_an_in_process_shipper_ships_what_is_due_and_everything_on_stop(stack, tmp_path):
    from dataclasses import replace

    from bqspool.loader import Shipper

    env = Env(tmp_path, "eixa")
    rng = random.Random(12)
    buf = Buffer(env.config.buffer, "eixa", strict=True)
    # No schema set configured: the shipper takes the buffer's own. A stream is due
    # a second after its oldest event; a quiet one never.
    config = replace(env.config, schemas=None, ship_max_delay="1s")
    shipper = Shipper(buf, config, interval=0.2, handle_signals=False).start()
    first = buf.append_many("tasks", [make_event(env.schemas["tasks"], rng) for _ in range(10)])
    deadline = time.monotonic() + 20
    while not env.bucket("staged") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert env.bucket("staged"), "the background thread never shipped"
    last = buf.append_many("tasks", [make_event(env.schemas["tasks"], rng) for _ in range(7)])
    shipper.stop()  # closes the buffer, then ships what is left
    assert stored.pending_events(env.config.buffer) == 0 and shipper.shipped == 17
    with pytest.raises(Exception, match="closed"):
        buf.append("tasks", make_event(env.schemas["tasks"], rng))
    assert commit_cli(env).returncode == 0
    assert set(env.bq_ids("tasks")) == set(first + last)


def test_an_app_that_simply_exits_ships_what_it_acknowledged(stack, tmp_path):
    env = Env(tmp_path, "eixa")
    code = (
        "import random\n"
        "from bqspool.buffer import Buffer\n"
        "from bqspool.loader import Shipper, load_config\n"
        "from tests.events import make_event\n"
        "buf = Buffer(load_config().buffer, 'eixa', strict=True)\n"
        "Shipper(buf, load_config(), interval=3600).start()\n"
        "rng = random.Random(1)\n"
        "print('\\n'.join(buf.append_many('tasks', [make_event(buf.schemas['tasks'], rng) for _ in range(40)])))\n"
    )  # no stop(), no signal: the interpreter's exit ships
    res = subprocess.run([sys.executable, "-c", code], env=env.env(), cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    acked = res.stdout.split()
    assert len(acked) == 40 and stored.pending_events(env.config.buffer) == 0
    assert commit_cli(env).returncode == 0
    assert sorted(env.bq_ids("tasks")) == sorted(acked)


def test_a_ship_report_says_where_its_time_went(tmp_path):
    schemas = load_schema_set("eixa")
    store = MemoryObjectStore()
    with Buffer(tmp_path / "b.db", schemas, strict=True) as buf:
        for i in range(50):
            buf.append("tasks", make_event(schemas["tasks"], random.Random(i)))
    report = Drainer(tmp_path / "b.db", schemas, store, None, Settings(batch_rows=20), progress=False).ship_once()
    assert report.batches_shipped == 3
    took = report.step_seconds
    assert set(took) == {"stage", "upload", "handover", "housekeeping"}
    assert all(s > 0 for s in took.values()) and sum(took.values()) <= report.seconds + 0.01
    idle = Drainer(tmp_path / "b.db", schemas, store, None, progress=False).ship_once()
    assert idle.batches_shipped == 0 and set(idle.step_seconds) == {"housekeeping"}
