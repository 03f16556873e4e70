"""The drain's decisions, on the in-memory fakes: milliseconds per test.

Budgets and deferral, grouping, splitting a rejected object, transient
retries, pacing, the lease, and a crash at every step boundary. The same
paths run on the real local stack in test_loader_*.py; these add the
faults real servers cannot produce and the cases that would take minutes
of real load jobs.
"""

import random

import pytest
from bqspool.buffer import Buffer
from bqspool.loader import faults
from bqspool.loader.drain import Drainer
from bqspool.loader.interfaces import JobError, WarehouseLimits
from bqspool.loader.layout import Layout
from bqspool.loader.settings import Settings
from bqspool.loader.ship import buffer_lease, ledger
from bqspool.loader.testing import MemoryObjectStore, MemoryWarehouse
from bqspool.schemas import load_schema_set
from bqspool.schemas.errors import BackendUnavailableError, LeaseHeldError, LeaseLostError

from .events import make_event
from .stored import pending_events, sqlite_utils_db

EIXA = load_schema_set("eixa")


def settings(quota_per_table_day=None, pace_jobs=None, **kw) -> Settings:
    """The loader's settings, with the budget and pacing under the names these tests give them."""
    if quota_per_table_day is not None:
        kw["jobs_per_table_day"] = quota_per_table_day
    return Settings(jobs_per_table_10s=pace_jobs, **kw)


class Clock:
    """An injected clock: sleeping advances it, nothing waits."""

    def __init__(self):
        self.now = 1_800_000_000.0  # wall-clock seconds: the commit log's times are the store's
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.slept.append(s)
        self.now += s


@pytest.fixture
def rig(tmp_path):
    clock = Clock()
    store = MemoryObjectStore(clock=clock)
    warehouse = MemoryWarehouse(store, EIXA, clock=clock, sleep=clock.sleep)

    def drainer(progress=False, **kw):
        return Drainer(
            tmp_path / "b.db",
            EIXA,
            store,
            warehouse,
            settings(**kw),
            clock=clock,
            sleep=clock.sleep,
            staging_dir=tmp_path / "staging",
            progress=progress,
        )

    def fill(counts, seed=0, per_call=5):
        rng = random.Random(seed)
        out = {}
        with Buffer(tmp_path / "b.db", EIXA, durability="normal", strict=True) as buf:
            for stream, n in counts.items():
                events = [make_event(EIXA[stream], rng) for _ in range(n)]
                out[stream] = [
                    i for lo in range(0, n, per_call) for i in buf.append_many(stream, events[lo : lo + per_call])
                ]
        return out

    class Rig:
        pass

    r = Rig()
    r.store, r.warehouse, r.clock, r.drainer, r.fill, r.path = store, warehouse, clock, drainer, fill, tmp_path / "b.db"
    return r


def bucket_dead(rig) -> dict[str, str]:
    """Dead letters the committer left in the bucket: event id -> reason."""
    import io

    import pyarrow.parquet as pq

    out = {}
    for name, data in rig.store.objects.items():
        if "/dead/" in name and name.endswith(".parquet"):
            (row,) = pq.read_table(io.BytesIO(data)).to_pylist()
            out[row["_event_id"]] = rig.store.objects[name + ".reason"].decode()
    return out


def exactly_once(rig, appended):
    for table, ids in appended.items():
        got = rig.warehouse.ids(table)
        assert set(got) == set(ids), f"{table}: {len(set(ids) - set(got))} missing, {len(set(got) - set(ids))} extra"
        assert max(got.values(), default=1) == 1, f"{table}: loaded twice"
    assert pending_events(sqlite_utils_db(rig.path)) == 0


def test_everything_loads_once_with_one_job_per_table(rig):
    appended = rig.fill({"tasks": 40, "user_interactions": 60})
    report = rig.drainer().drain_once()
    assert report.events_loaded == 100 and report.jobs_submitted == 2
    exactly_once(rig, appended)


def test_budget_defers_then_groups_near_it(rig):
    appended = rig.fill({"tasks": 60})
    report = rig.drainer(batch_rows=10, per_job=1, quota_per_table_day=4).drain_once()
    assert report.jobs_submitted == 4 and report.events_loaded == 40 and "tasks" in report.deferred
    # Near the budget (4 of 5 used), every waiting file goes into one job.
    report = rig.drainer(batch_rows=10, per_job=1, quota_per_table_day=5).drain_once()
    assert report.jobs_submitted == 1 and report.events_loaded == 20
    exactly_once(rig, appended)


def test_the_warehouse_limits_cap_the_budget_and_the_files_per_job(rig):
    rig.warehouse.limits = WarehouseLimits(jobs_per_table_day=2, jobs_per_table_10s=5, uris_per_job=3)
    rig.fill({"tasks": 100})
    report = rig.drainer(batch_rows=10, per_job=500, quota_per_table_day=1000).drain_once()
    assert report.jobs_submitted == 2 and report.events_loaded == 60  # 2 jobs of 3 files: the limits win
    assert "tasks" in report.deferred


def test_pacing_spreads_jobs_over_ten_second_windows(rig):
    appended = rig.fill({"tasks": 120, "user_interactions": 120})
    began = rig.clock.now
    report = rig.drainer(batch_rows=10, per_job=1).drain_once()
    assert report.jobs_submitted == 24
    # 12 jobs a table, 5 per 10 s each (counted from the commit log), in
    # turns: two full waits per table's windows, the tables sharing them.
    assert len(rig.clock.slept) >= 2 and 20 <= rig.clock.now - began < 30
    exactly_once(rig, appended)


def test_transient_job_failures_retry_under_new_ids_then_give_up(rig):
    appended = rig.fill({"tasks": 10})
    rig.warehouse.knobs.job_errors = [JobError("backend", "backendError", "try again")] * 2
    report = rig.drainer().drain_once()
    assert report.events_loaded == 10 and len(rig.warehouse.inserts) == 3
    assert len(set(rig.warehouse.inserts)) == 3  # every attempt its own job id
    more = rig.fill({"tasks": 10}, seed=1)
    rig.warehouse.knobs.job_errors = [JobError("backend", "backendError", "down")] * 10
    with pytest.raises(BackendUnavailableError, match="failed 5 times"):
        rig.drainer().drain_once()
    rig.warehouse.knobs.job_errors = []
    rig.drainer().drain_once()
    exactly_once(rig, {"tasks": appended["tasks"] + more["tasks"]})


def test_transient_call_failures_are_retried_by_the_policy(rig):
    appended = rig.fill({"tasks": 10})
    rig.store.knobs.fail_next = 2
    rig.warehouse.knobs.fail_next = 2
    rig.drainer().drain_once()
    exactly_once(rig, appended)


def test_a_lease_write_whose_answer_was_lost_is_still_the_committers(rig):
    # The write lands, the connection drops before the answer: the retry's
    # precondition fails against that very write, which is ours.
    appended = rig.fill({"tasks": 10})
    rig.store.knobs.lose_answer("write bqspool/committer.lease")
    report = rig.drainer().drain_once()
    assert report.jobs_submitted == 1
    exactly_once(rig, appended)


def test_a_renewal_whose_answer_was_lost_keeps_the_lease(rig):
    from bqspool.loader.commit import bucket_lease

    lease = bucket_lease.acquire(rig.store, "p/committer.lease", "me", 60)
    rig.clock.now += 30
    rig.store.knobs.lose_answer("write p/committer.lease")
    bucket_lease.renew(rig.store, lease, 60)  # no LeaseLostError: the write was ours
    assert lease.generation == rig.store.read_object("p/committer.lease")[1]
    assert lease.expires == rig.clock.now + 60
    rig.clock.now += 30
    bucket_lease.renew(rig.store, lease, 60)  # and the next renewal's precondition holds
    with pytest.raises(LeaseHeldError):
        bucket_lease.acquire(rig.store, "p/committer.lease", "someone else", 60)


def test_a_committer_whose_release_failed_takes_its_lease_back_at_once(rig):
    appended = rig.fill({"tasks": 10})
    real_write = rig.store.write_object

    def no_release(name, data, generation, metadata=None):  # GCS goes away as the commit lets its lease go
        if name.endswith("committer.lease") and b'"holder": ""' in data:
            raise BackendUnavailableError("GCS is down")
        return real_write(name, data, generation, metadata)

    rig.store.write_object = no_release
    drainer = rig.drainer()
    drainer.drain_once()  # loaded; the release failed, so the lease stays, live
    rig.store.write_object = real_write
    more = rig.fill({"tasks": 5}, seed=3)
    drainer.ship_once()
    with pytest.raises(LeaseHeldError):
        rig.drainer().commit_once()  # another committer waits it out ...
    report = drainer.drain_once()  # ... but the one that holds it goes on at once
    assert report.events_loaded == 5
    exactly_once(rig, {"tasks": appended["tasks"] + more["tasks"]})


def test_a_rejected_row_is_found_by_splitting_and_dead_lettered_alone(rig):
    appended = rig.fill({"tasks": 200}, per_call=200)
    bad = appended["tasks"][137]
    rig.warehouse.knobs.reject_rows = lambda row: "no" if row["_event_id"] == bad else None
    report = rig.drainer(pace_jobs=1000).drain_once()
    assert report.dead_lettered == 1 and report.quarantined == []
    assert set(rig.warehouse.ids("tasks")) == set(appended["tasks"]) - {bad}
    assert len(rig.warehouse.inserts) <= 2 * 8 + 1  # about 2 log2(200) jobs
    dead = bucket_dead(rig)
    assert list(dead) == [bad] and "no" in dead[bad]
    assert pending_events(sqlite_utils_db(rig.path)) == 0


def test_a_group_rejection_loads_the_batches_alone_first(rig):
    appended = rig.fill({"tasks": 50}, per_call=10)
    bad = appended["tasks"][23]
    rig.warehouse.knobs.reject_rows = lambda row: "no" if row["_event_id"] == bad else None
    report = rig.drainer(batch_rows=10, per_job=10, pace_jobs=1000).drain_once()
    assert report.dead_lettered == 1
    assert set(rig.warehouse.ids("tasks")) == set(appended["tasks"]) - {bad}


def test_a_rejection_of_every_row_quarantines_the_batch_whole(rig):
    appended = rig.fill({"tasks": 64}, per_call=64)
    rig.warehouse.knobs.reject_rows = lambda row: "the table changed"
    report = rig.drainer(pace_jobs=1000).drain_once()
    assert len(report.quarantined) == 1 and report.dead_lettered == 0
    assert len(rig.warehouse.inserts) == 3  # the batch and its two halves, no more
    rig.warehouse.knobs.reject_rows = None
    from bqspool.loader.commit import held
    from bqspool.loader.layout import Layout

    (h,) = held.held_objects(rig.store, Layout("bqspool"))
    assert h.area == "quarantine" and "the table changed" in h.reason and h.name == report.quarantined[0]
    assert held.retry(rig.store, Layout("bqspool")) == 1
    rig.drainer(pace_jobs=1000).drain_once()
    exactly_once(rig, appended)


def test_an_object_with_other_bytes_under_our_name_is_quarantined(rig):
    appended = rig.fill({"tasks": 10, "user_interactions": 10})
    drainer = rig.drainer()
    real_upload = rig.store.upload

    def planted(name, path, *rest):
        if "/tasks/" in name and name not in rig.store.objects:
            rig.store.put(name, b"someone else's bytes")
        return real_upload(name, path, *rest)

    rig.store.upload = planted
    report = drainer.drain_once()
    assert (
        len(report.ship.quarantined) == 1
        and "other content" in ledger.batches(__import__("sqlite3").connect(rig.path), "quarantined")[0].error
    )
    assert set(rig.warehouse.ids("user_interactions")) == set(appended["user_interactions"])


def test_a_duplicate_job_id_is_never_run_twice_even_where_the_backend_would(rig):
    appended = rig.fill({"tasks": 10})
    rig.warehouse.knobs.duplicate_ids = "rerun"  # as the emulator does
    crashing = rig.drainer(lease_seconds=0.001)
    with pytest.raises(Crash):
        with crash_at("after_submit"):
            crashing.drain_once()
    rig.drainer().drain_once()
    assert len(rig.warehouse.inserts) == 1
    exactly_once(rig, appended)


def test_a_running_job_is_waited_for(rig):
    appended = rig.fill({"tasks": 10})
    rig.warehouse.knobs.running_polls = 3
    rig.drainer().drain_once()
    exactly_once(rig, appended)


def test_a_stale_loader_changes_nothing(rig):
    appended = rig.fill({"tasks": 30})
    a = rig.drainer(batch_rows=10, per_job=1)
    b = rig.drainer(batch_rows=10, per_job=1, lease_seconds=0.001)
    import sqlite3
    import time

    conn = sqlite3.connect(rig.path, isolation_level=None)
    ledger.prepare(conn)
    a.shipping.fence = buffer_lease.acquire_lease(conn, a.shipping.holder, 0.3, rig.path)
    with pytest.raises(LeaseHeldError):
        b.drain_once()  # A's lock is held: it is alive
    time.sleep(0.35)  # ... but its lease expired, and it stalls: B takes over
    buffer_lease.let_go(rig.path, a.shipping.fence.token, a.shipping.fence.fd)
    b.drain_once()
    exactly_once(rig, appended)
    with pytest.raises(LeaseLostError):
        buffer_lease.renew_lease(conn, a.shipping.fence, 120)
    with pytest.raises(LeaseLostError):
        ledger.quarantine(conn, ledger.batches(conn)[0].batch_id, "stale", a.shipping.fence)
    assert "quarantined" not in {b.state for b in ledger.batches(conn)}
    conn.close()


# -- a crash at every step boundary ------------------------------------------------


class Crash(BaseException):
    """Stands for kill -9 at a fault point: nothing after it runs."""


class crash_at:
    def __init__(self, point, nth=1):
        self.point, self.nth = point, nth

    def __enter__(self):
        self.saved = faults.hit
        seen = [0]

        def hit(name):
            if name == self.point:
                seen[0] += 1
                if seen[0] == self.nth:
                    raise Crash(name)

        faults.hit = hit
        return self

    def __exit__(self, *exc):
        faults.hit = self.saved
        return False


@pytest.mark.parametrize("point", faults.POINTS)
@pytest.mark.parametrize("nth", [1, 2])
def test_a_crash_at_every_step_then_drain_again(rig, point, nth):
    appended = rig.fill({"tasks": 60, "user_interactions": 40}, per_call=10)
    bad = appended["tasks"][17]
    rig.warehouse.knobs.reject_rows = lambda row: "no" if row["_event_id"] == bad else None
    try:
        with crash_at(point, nth):
            rig.drainer(batch_rows=20, per_job=2, pace_jobs=1000).drain_once()
    except Crash:
        pass
    rig.drainer(batch_rows=20, per_job=2, pace_jobs=1000).drain_once()
    exactly_once(
        rig, {"tasks": [i for i in appended["tasks"] if i != bad], "user_interactions": appended["user_interactions"]}
    )
    assert list(bucket_dead(rig)) == [bad]
    leftovers = [n for n in rig.store.objects if "/staged/" in n or "/commits/" in n]
    assert leftovers == []  # nothing left behind: everything loaded, archived or held


def test_batches_an_earlier_version_staged_or_uploaded_are_shipped_under_the_new_layout(rig):
    import sqlite3

    appended = rig.fill({"tasks": 30}, per_call=10)
    conn = sqlite3.connect(rig.path, isolation_level=None)
    ledger.prepare(conn)
    buffer_id = conn.execute("SELECT value FROM meta WHERE key = 'buffer_id'").fetchone()[0]
    ledger.seal(conn, "tasks", buffer_id, Layout("bqspool"), 10, 1 << 30)
    # The old layout: PREFIX/STREAM/DAY/ID.parquet
    conn.execute("UPDATE batches SET object_name = 'bqspool/tasks/' || day || '/' || batch_id || '.parquet'")
    first, second, third = ledger.batches(conn)
    conn.execute("UPDATE batches SET state = 'staged' WHERE batch_id = ?", (first.batch_id,))
    conn.execute("UPDATE batches SET state = 'uploaded' WHERE batch_id = ?", (second.batch_id,))
    conn.execute("UPDATE batches SET state = 'uploaded', load_id = 'old' WHERE batch_id = ?", (third.batch_id,))
    conn.close()
    rig.drainer().drain_once()
    loaded = set(rig.warehouse.ids("tasks"))
    assert loaded == set(appended["tasks"][:20])  # the third was in an old load job: left, and said so
    assert pending_events(sqlite_utils_db(rig.path)) == 10
    assert all("/staged/" not in n for n in rig.store.objects if n.endswith(".parquet"))


def test_retries_of_failed_jobs_count_against_the_budget_too(rig):
    appended = rig.fill({"tasks": 10})
    rig.warehouse.knobs.job_errors = [JobError("backend", "backendError", "try again")] * 3
    report = rig.drainer(quota_per_table_day=2).drain_once()
    assert len(rig.warehouse.inserts) == 2 and "retries wait" in report.deferred["tasks"]
    rig.clock.now += 86_401  # a day later the budget is free again
    rig.warehouse.knobs.job_errors = []
    rig.drainer(quota_per_table_day=2).drain_once()
    exactly_once(rig, appended)


# -- a batch is uploaded while the next one is staged ----------------------------


def _states(rig) -> list[str]:
    import sqlite3

    conn = sqlite3.connect(rig.path)
    try:
        return [b.state for b in sorted(ledger.batches(conn), key=lambda b: b.seq_lo)]
    finally:
        conn.close()


def test_the_next_batch_is_staged_while_one_uploads(rig):
    import time

    appended = rig.fill({"tasks": 40}, per_call=10)
    real_upload = rig.store.upload
    others = []  # staged files beside the one being uploaded, at each upload

    def upload(name, path, *rest):
        # The first upload waits (5 s at most) for the next batch to be staged.
        until = time.monotonic() + (5 if not others else 0)
        while True:
            beside = [p for p in path.parent.glob("*.parquet") if p != path]
            if beside or time.monotonic() > until:
                break
            time.sleep(0.005)
        others.append(len(beside))
        return real_upload(name, path, *rest)

    rig.store.upload = upload
    report = rig.drainer(batch_rows=10).drain_once()
    assert others[0] == 1, "the second batch was not staged while the first uploaded"
    assert max(others) <= 1  # one batch in flight: never more than two staged files
    assert report.ship.batches_shipped == 4 and report.ship.events_shipped == 40
    exactly_once(rig, appended)


def test_an_upload_that_fails_behind_the_next_stage_loses_nothing(rig):
    appended = rig.fill({"tasks": 30}, per_call=10)
    real_upload = rig.store.upload
    calls = []

    def upload(name, path, *rest):
        calls.append(name)
        if len(calls) == 2:
            raise BackendUnavailableError("GCS is down")
        return real_upload(name, path, *rest)

    rig.store.upload = upload
    with pytest.raises(BackendUnavailableError):
        rig.drainer(batch_rows=10).ship_once()
    # The third batch was staged while the second failed to upload; nothing was handed over but the first.
    assert _states(rig) == ["shipped", "staged", "staged"]
    assert pending_events(sqlite_utils_db(rig.path)) == 20
    rig.store.upload = real_upload
    rig.drainer(batch_rows=10).drain_once()  # the lease was let go: a new ship takes it
    exactly_once(rig, appended)


def test_a_stage_that_fails_waits_for_the_batch_in_flight(rig):
    import errno
    import threading
    import time

    appended = rig.fill({"tasks": 30}, per_call=10)
    real_upload = rig.store.upload

    def slow(name, path, *rest):
        time.sleep(0.3)  # still uploading when the next stage fails
        return real_upload(name, path, *rest)

    rig.store.upload = slow
    drainer = rig.drainer(batch_rows=10)
    real_stage, staged = drainer.shipping._stage_file, []

    def stage(conn, b):
        staged.append(b.batch_id)
        if len(staged) == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real_stage(conn, b)

    drainer.shipping._stage_file = stage
    with pytest.raises(OSError, match="Input/output"):
        drainer.ship_once()
    # The first batch's upload and hand-over finished before the ship gave up its lease.
    assert _states(rig) == ["shipped", "sealed", "sealed"]
    assert not [t for t in threading.enumerate() if t.name.startswith("bqspool-upload")]
    rig.store.upload = real_upload
    rig.drainer(batch_rows=10).drain_once()
    exactly_once(rig, appended)


# -- object names -------------------------------------------------------------------


def test_a_batch_is_named_when_sealed_by_a_digest_of_its_rows(rig, tmp_path):
    import re
    import shutil
    import sqlite3

    def sealed(path):
        conn = sqlite3.connect(path, isolation_level=None)
        ledger.prepare(conn)
        ledger.seal(conn, "tasks", "buf", Layout("p"), 100, 1 << 30)
        (b,) = ledger.batches(conn)
        return conn, b

    with Buffer(rig.path, EIXA):
        pass
    shutil.copy(rig.path, tmp_path / "copy.db")  # a copy made before either appends
    rig.fill({"tasks": 10}, seed=1)
    shutil.copy(rig.path, tmp_path / "same.db")  # a copy of the same rows
    with Buffer(tmp_path / "copy.db", EIXA, durability="normal") as buf:
        rng = __import__("random").Random(2)
        for _ in range(2):
            buf.append_many("tasks", [make_event(EIXA["tasks"], rng) for _ in range(5)])
    conn, b = sealed(rig.path)
    assert not ledger.unnamed(b)
    assert re.fullmatch(
        r"p/staged/tasks/\d{4}-\d\d-\d\d/tasks-buf-0+1-0+2-[0-9a-f]{20}-t\d{13}-n10\.parquet", b.object_name
    )
    assert ledger.mark_staged(conn, b, 123) == b.object_name  # staging keeps the name
    _, same = sealed(tmp_path / "same.db")
    _, other = sealed(tmp_path / "copy.db")
    assert same.batch_id == other.batch_id == b.batch_id  # one buffer id, one seq range ...
    assert same.object_name == b.object_name  # ... the same rows: one object
    assert other.object_name != b.object_name  # ... other rows: never the same object


def test_an_idle_committer_still_says_its_clock_is_off():
    """Nothing staged: the listing's answer carries the store's clock, so a committer minutes
    off says so at once, with no request of its own, instead of only once there is work."""
    from bqspool.loader.commit.committer import Committer
    from bqspool.schemas.errors import ClockSkewError

    store = MemoryObjectStore(clock=lambda: 1_800_000_000.0)
    warehouse = MemoryWarehouse(store, EIXA)
    ahead = Committer(store, warehouse, Settings(prefix="p", max_clock_skew=30), clock=lambda: 1_800_000_600.0)
    with pytest.raises(ClockSkewError, match="600s ahead of the storage server"):
        ahead.commit_once()
    near = Committer(store, warehouse, Settings(prefix="p", max_clock_skew=30), clock=lambda: 1_800_000_020.0)
    assert near.commit_once().idle
