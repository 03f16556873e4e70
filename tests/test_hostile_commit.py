"""The commit stage under a hostile run, on the in-memory fakes: overlapping committers,
clocks that disagree, and strays and copies in the bucket. The same paths run on the
local stack with real processes in test_fleet.py and test_loader_hostile.py."""

import random
from pathlib import Path

import pytest
from bqspool.buffer import Buffer
from bqspool.loader import faults
from bqspool.loader.commit import bucket_lease
from bqspool.loader.commit.committer import Committer
from bqspool.loader.commit.held import held_objects
from bqspool.loader.drain import Drainer
from bqspool.loader.layout import Layout
from bqspool.loader.settings import Settings
from bqspool.loader.testing import MemoryObjectStore, MemoryWarehouse
from bqspool.schemas import load_schema_set
from bqspool.schemas.errors import ClockSkewError, LeaseHeldError

from .events import make_event
from .test_drain_logic import Clock, Crash, crash_at

EIXA = load_schema_set("eixa")
LAYOUT = Layout("bqspool")
COMMIT_POINTS = [
    p for p in faults.POINTS if p.startswith("after_") and p not in ("after_seal", "after_stage", "after_upload")
]
COMMIT_POINTS = [p for p in COMMIT_POINTS if p not in ("after_ship", "after_restore_copy")]


class World:
    """One bucket and warehouse on an injected clock, and hosts that append and ship to it."""

    def __init__(self, tmp_path):
        self.clock = Clock()
        self.store = MemoryObjectStore(clock=self.clock)
        self.warehouse = MemoryWarehouse(self.store, EIXA, clock=self.clock, sleep=self.clock.sleep)
        self.tmp = tmp_path
        self.appended: dict[str, list[str]] = {}
        self.rng = random.Random(3)

    def ship(self, host: str, counts: dict[str, int], batch_rows: int = 5) -> None:
        path = self.tmp / f"{host}.db"
        with Buffer(path, EIXA, durability="normal", strict=True) as buf:
            for stream, n in counts.items():
                events = [make_event(EIXA[stream], self.rng) for _ in range(n)]
                self.appended.setdefault(stream, []).extend(buf.append_many(stream, events))
        settings = Settings(batch_rows=batch_rows)
        Drainer(
            path, EIXA, self.store, None, settings, staging_dir=self.tmp / f"{host}.staging", progress=False
        ).ship_once()

    def committer(self, **kw) -> Committer:
        kw.setdefault("clock", self.clock)
        return Committer(
            self.store, self.warehouse, Settings(per_job=3, jobs_per_table_10s=1000), tables=list(EIXA), **kw
        )

    def loaded_once(self) -> None:
        for table, ids in self.appended.items():
            got = self.warehouse.ids(table)
            assert set(got) == set(ids), f"{table}: {len(set(ids) - set(got))} missing"
            assert max(got.values()) == 1, f"{table}: {sum(n - 1 for n in got.values())} events loaded twice"

    def left(self, area: str) -> list[str]:
        return [n for n in self.store.objects if f"/{area}/" in n]


# -- 1. overlapping committers ----------------------------------------------------------


@pytest.mark.parametrize("point", [*COMMIT_POINTS, None])
def test_a_committer_whose_listing_predates_anothers_record_loads_nothing_twice(tmp_path, point):
    """A lists what is staged, then is overtaken (its lease lapses while it runs its
    last round): B takes the lease, commits objects shipped after A's listing, and
    dies at ``point``. A then finds B's record in the log and finishes or tidies it:
    it must archive every object the record names, not only those it listed."""
    world = World(tmp_path)
    world.ship("h1", {"tasks": 10, "user_interactions": 5})
    a = world.committer()
    a._renew = lambda: None  # past its renewal: the lease cannot stop it now
    listed = a._staged_by_table

    def overtaken(report):
        view = listed(report)
        world.clock.now += 300  # A's lease has lapsed, by the store's clock
        world.ship("h2", {"tasks": 10})
        b = world.committer()
        try:
            with crash_at(point) if point else _nothing():
                b.commit_once()
        except Crash:
            pass
        return view

    a._staged_by_table = overtaken
    a.commit_once()
    world.clock.now += 300  # whatever B held has lapsed
    world.committer().commit_once()
    world.committer().commit_once()
    world.loaded_once()
    assert world.left("staged") == [] and world.left("commits") == []


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- clocks --------------------------------------------------------------------------------


@pytest.mark.parametrize("skew", [600.0, -600.0])
def test_a_committer_whose_clock_is_off_says_so_and_commits_nothing(tmp_path, skew):
    world = World(tmp_path)
    world.ship("h1", {"tasks": 5})
    skewed = world.committer(clock=lambda: world.clock() + skew)
    with pytest.raises(ClockSkewError, match="ahead of" if skew > 0 else "behind") as err:
        skewed.commit_once()
    assert err.value.skew == pytest.approx(skew) and "NTP" in str(err.value)
    assert world.warehouse.inserts == [] and world.left("commits") == []
    assert world.store.read_object(LAYOUT.lease) is None  # it never took the lease
    world.committer().commit_once()
    world.loaded_once()


def test_the_lease_expires_by_the_stores_clock_whatever_the_holders_clock_says(tmp_path):
    """A holder 10 minutes ahead once wrote an expiry 10 minutes late; a peer then waited
    22 minutes. The lease now says how long it lasts, and the store's clock decides."""
    world = World(tmp_path)
    ahead = lambda: world.clock() + 600
    lease = bucket_lease.acquire(world.store, LAYOUT.lease, "ahead", 120)
    assert lease.expires == pytest.approx(world.clock() + 120)  # on the store's clock, not ``ahead``'s
    assert ahead() - world.clock() == 600
    world.clock.now += 60
    with pytest.raises(LeaseHeldError, match="expires in 60s"):
        bucket_lease.acquire(world.store, LAYOUT.lease, "peer", 120)
    world.clock.now += 61
    taken = bucket_lease.acquire(world.store, LAYOUT.lease, "peer", 120)
    assert taken.token == lease.token + 1


def test_an_earlier_versions_lease_still_holds_until_its_written_expiry(tmp_path):
    import json

    world = World(tmp_path)
    doc = {"holder": "old", "expires": world.clock() + 50, "token": 4}
    world.store.write_object(LAYOUT.lease, json.dumps(doc).encode(), 0)
    with pytest.raises(LeaseHeldError):
        bucket_lease.acquire(world.store, LAYOUT.lease, "new", 120)
    world.clock.now += 51
    assert bucket_lease.acquire(world.store, LAYOUT.lease, "new", 120).token == 5


# -- 2. strays and copies ----------------------------------------------------------------


STRAYS = [
    "bqspool/staged/stray.parquet",  # directly under staged/
    "bqspool/staged/user-events;drop/2026-12-04/x.parquet",  # a table name BigQuery refuses
    "bqspool/staged/user_interactions/x.parquet",  # no day folder
    "bqspool/staged/user_interactions/2026-12-04/sub/x.parquet",  # a folder too many
    "bqspool/staged/user_interactions/yesterday/x.parquet",  # a day that is not one
]


def test_strays_in_the_staged_area_are_quarantined_and_every_table_loads(tmp_path):
    world = World(tmp_path)
    world.ship("h1", {"tasks": 10, "user_interactions": 10, "routines": 5})
    for name in STRAYS:
        world.store.put(name, b"not ours")
    world.store.put("bqspool/staged/no_such_table/2026-12-04/x.parquet", b"a table the schema set lacks")
    world.store.put("bqspool/staged/tasks/2026-12-04/handmade.parquet", b"not a name bqspool writes")
    report = world.committer().commit_once()
    world.loaded_once()  # every table, in the same commit
    assert set(report.quarantined) >= set(STRAYS)
    held = {h.name: h for h in held_objects(world.store, LAYOUT)}
    assert set(held) == {
        *STRAYS,
        "bqspool/staged/no_such_table/2026-12-04/x.parquet",
        "bqspool/staged/tasks/2026-12-04/handmade.parquet",
    }
    assert "not a name bqspool writes" in held[STRAYS[0]].reason
    assert "not in the schema set" in held["bqspool/staged/no_such_table/2026-12-04/x.parquet"].reason
    assert world.left("staged") == []
    again = world.committer().commit_once()  # nothing stuck, nothing new
    assert again.quarantined == [] and again.jobs_submitted == 0


def test_a_batch_copied_under_another_name_loads_once(tmp_path):
    """Names carry a digest of the rows: two objects with one digest are one batch,
    whether the copy sits beside the original or comes after it was loaded."""
    world = World(tmp_path)
    world.ship("h1", {"tasks": 10})
    staged = sorted(n for n in world.store.objects if "/staged/" in n)
    original = staged[0]
    folder, _, file = original.rpartition("/")
    batch, _, rest = file.partition("-")  # tasks-BUFFER-...: another buffer id, the same digest
    copy = f"{folder}/{batch}-ffffffffffffffff-{rest.partition('-')[2]}"
    world.store.put(copy, world.store.objects[original])
    report = world.committer().commit_once()
    world.loaded_once()
    assert report.quarantined == [copy]
    later = f"{folder}/{batch}-eeeeeeeeeeeeeeee-{rest.partition('-')[2]}"
    world.store.put(later, world.warehouse.store.objects[next(iter(world.left("archive")))])
    world.committer().commit_once()
    world.loaded_once()
    (held,) = [h for h in held_objects(world.store, LAYOUT) if h.name == later]
    assert "holds the same batch as" in held.reason and "archive/" in held.reason


# -- 7. a copied buffer file whose copies diverge ------------------------------------------


def test_a_copied_buffer_holds_back_what_it_shared_with_the_original(tmp_path):
    """A buffer copied with 500 pending events, then each copy appending its own: the
    copies seal different batches of the shared events, so both used to load them
    (500 of 637 doubled). The copy now knows it is one and holds those back."""
    import shutil
    import sqlite3

    from bqspool.loader.ship import ledger
    from bqspool.loader.ship import quarantine as held_batches

    world = World(tmp_path)
    world.ship("orig", {"tasks": 500})  # shipped: not pending when copied
    original = tmp_path / "orig.db"
    with Buffer(original, EIXA, durability="normal", strict=True) as buf:
        shared = buf.append_many("tasks", [make_event(EIXA["tasks"], world.rng) for _ in range(500)])
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{original}{suffix}").exists():
            shutil.copy(f"{original}{suffix}", tmp_path / f"copy.db{suffix}")
    world.appended["tasks"] += shared  # each shared event, once
    # Each appends its own and ships everything: one batch each of shared and own events,
    # so the two batches of the shared events differ (another digest, another name).
    world.ship("orig", {"tasks": 37}, batch_rows=10_000)
    world.ship("copy", {"tasks": 100}, batch_rows=10_000)
    world.committer().commit_once()
    world.loaded_once()
    conn = sqlite3.connect(tmp_path / "copy.db")
    found = ledger.copied(conn)
    assert found is not None and found["inode"] != found["from_inode"]
    held = held_batches.list_batches(tmp_path / "copy.db")
    assert sum(b.rows for b in held) == 500 and all("is a copy of another" in b.error for b in held)
    assert all(b.held_from == "sealed" for b in held)
    # The original is gone for good: the operator retries, and they ship; here the
    # original shipped them already, so they load once more: the operator's call.
    assert held_batches.drop_batches(tmp_path / "copy.db", [b.batch_id for b in held]) == (len(held), 500)
    world.ship("copy", {})
    world.committer().commit_once()
    world.loaded_once()


def test_a_buffer_reopened_in_place_is_no_copy(tmp_path):
    """The same file opened again (a restarted app, a rescheduled pod on the same volume)."""
    import sqlite3

    from bqspool.loader.ship import ledger

    path = tmp_path / "b.db"
    for _ in range(3):
        with Buffer(path, EIXA, durability="normal") as buf:
            buf.append("tasks", make_event(EIXA["tasks"], random.Random(1)))
    assert ledger.copied(sqlite3.connect(path)) is None
