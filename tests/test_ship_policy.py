"""When streams ship: by size and by age, never on a clock; a quiet stream costs nothing.

On the in-memory store with a clock the test steps: the buffer's append
times and the ship's "now" both come from it, so hours pass in
milliseconds. SIGTERM shipping everything runs on real processes in
test_fleet.py.
"""

import random

import pytest
from bqspool.buffer import Buffer
from bqspool.buffer import store as buffer_store
from bqspool.loader.layout import ObjectName
from bqspool.loader.settings import Settings
from bqspool.loader.ship.policy import DEFAULT_RATIO, ShipPolicy
from bqspool.loader.ship.runner import Ship
from bqspool.loader.testing import MemoryObjectStore

from .events import make_event
from .test_drain_logic import EIXA, rig  # noqa: F401  (the fixture)


class SteppedClock:
    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    found = SteppedClock()
    monkeypatch.setattr(buffer_store, "now_us", lambda: int(found.now * 1_000_000))
    return found


def _ship(tmp_path, store, clock, **settings) -> Ship:
    return Ship(tmp_path / "b.db", EIXA, store, Settings(**settings), progress=False, clock=clock)


def _objects(store: MemoryObjectStore, stream: str) -> list[ObjectName]:
    return [ObjectName.of_file(n) for n in sorted(store.objects) if f"/staged/{stream}/" in n]


def test_a_slow_producer_makes_one_object_per_stream_per_window(tmp_path, clock):
    store = MemoryObjectStore()
    ship = _ship(tmp_path, store, clock, max_delay=60.0)
    streams = ["tasks", "routines", "projects"]
    rng = random.Random(3)
    appended = dict.fromkeys(streams, 0)
    with Buffer(tmp_path / "b.db", EIXA) as buf:
        for step in range(0, 600, 5):  # ten minutes, a look every 5 s
            if step % 10 == 0:  # each stream: an event every 10 s
                for s in streams:
                    buf.append(s, make_event(EIXA[s], rng))
                    appended[s] += 1
            ship.ship_once(due_only=True)
            clock.now += 5
    # A stream is due when its oldest event is 60 s old: at t=60 it ships the events of
    # t=0..60, then the next oldest (t=70) is due at t=130, and so on: an object every
    # 70 s (the window and the gap to the next event), eight by t=595; four events wait.
    for s in streams:
        made = _objects(store, s)
        assert len(made) == 8, (s, len(made))
        assert [o.events for o in made] == [7] * 8  # a window's worth each, never split
        assert sum(o.events or 0 for o in made) == appended[s] - 4


def test_a_fast_producer_makes_objects_of_about_the_target_size(tmp_path, clock):
    store = MemoryObjectStore()
    target = 48 * 1024
    ship = _ship(tmp_path, store, clock, target_bytes=target, max_delay=3600.0)
    rng = random.Random(5)
    with Buffer(tmp_path / "b.db", EIXA) as buf:
        for _ in range(40):  # a burst: no event is old, the bytes make it due
            buf.append_many("user_interactions", [make_event(EIXA["user_interactions"], rng) for _ in range(100)])
            ship.ship_once(due_only=True)
            clock.now += 1
    sizes = [len(store.objects[n]) for n in sorted(store.objects) if "/staged/user_interactions/" in n]
    assert len(sizes) >= 4
    # The first object is sized at the default ratio; after it, the stream's own.
    assert sizes[0] <= target * 1.5 and sizes[0] >= target * DEFAULT_RATIO
    for size in sizes[1:]:
        assert 0.6 * target <= size <= 1.5 * target, sizes


def test_a_quiet_buffer_costs_nothing_and_a_full_ship_takes_everything(tmp_path, clock):
    store = MemoryObjectStore()
    ship = _ship(tmp_path, store, clock, max_delay=60.0)
    rng = random.Random(7)
    with Buffer(tmp_path / "b.db", EIXA) as buf:
        buf.append("tasks", make_event(EIXA["tasks"], rng))
    assert ship.ship_once(due_only=True).batches_shipped == 0  # not due: nothing sent, no lease taken
    assert store.requests.snapshot() == {}
    clock.now += 59
    assert ship.due() == {}
    clock.now += 1
    assert list(ship.due()) == ["tasks"] and "60s old" in str(ship.due()["tasks"])
    with Buffer(tmp_path / "b.db", EIXA) as buf:
        buf.append("routines", make_event(EIXA["routines"], rng))
    report = ship.ship_once(due_only=True)
    assert report.per_stream.keys() == {"tasks"} and set(report.due) == {"tasks"}
    assert report.requests == {"insert": 1}
    report = ship.ship_once()  # the one-shot default: everything, due or not
    assert report.per_stream.keys() == {"routines"}


def test_the_check_reads_counters_not_every_row(tmp_path, clock):
    """Below the smallest stream's target, no per-stream sum runs: the check is an
    index lookup per stream whatever the backlog."""
    import sqlite3

    rng = random.Random(9)
    with Buffer(tmp_path / "b.db", EIXA) as buf:
        buf.append_many("tasks", [make_event(EIXA["tasks"], rng) for _ in range(500)])
    policy = ShipPolicy(target_bytes=1 << 30, max_delay=60.0)
    conn = sqlite3.connect(tmp_path / "b.db")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    assert policy.due(conn, EIXA, clock.now) == {}
    assert not any("sum(nbytes)" in s for s in statements)
    assert all("ORDER BY seq LIMIT 1" in s or "batches" in s or "counters" in s for s in statements)
    small = ShipPolicy(target_bytes=1024, max_delay=60.0)
    assert list(small.due(conn, EIXA, clock.now)) == ["tasks"]
    conn.close()


@pytest.mark.parametrize("long_lived", [False, True])
def test_a_one_shot_commit_lists_no_quiet_tables_log(rig, monkeypatch, long_lived):  # noqa: F811
    """A cron host's `commit --once` pays nothing for quiet tables; `run` counts every
    table's jobs once, at its first commit, so that the metrics start with all of them."""
    from .test_drain_logic import exactly_once

    appended = rig.fill({"tasks": 10})
    drainer = rig.drainer(batch_rows=5)
    drainer.committer.count_quiet_tables = long_lived
    drainer.ship_once()
    listed: list[str] = []
    listing = rig.store.list_objects
    monkeypatch.setattr(
        rig.store, "list_objects", lambda prefix, *a, **kw: listed.append(prefix) or listing(prefix, *a, **kw)
    )
    report = drainer.commit_once()
    exactly_once(rig, appended)
    counted = {t for t, figures in report.per_table.items() if "jobs_24h" in figures}
    logs = {p.rstrip("/").rsplit("/", 1)[-1] for p in listed if "/commit-archive/" in p}
    if long_lived:
        assert counted == logs == set(EIXA) and report.per_table["routines"]["jobs_24h"] == 0
    else:
        assert counted == logs == {"tasks"}
