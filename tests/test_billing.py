"""Counting what costs money: every request by billing class, and the commit log's record of it.

On the in-memory fakes: each adapter call is counted in its class, and a
drain's requests are all recorded once (in summaries, the released lease,
or objects not loaded yet), crashes included. The same on the real local
stack, against a counting proxy, is in test_cost_counts.py.
"""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from bqspool.loader import billing
from bqspool.loader.layout import Layout
from bqspool.loader.testing import MemoryObjectStore, MemoryWarehouse

from .test_drain_logic import EIXA, Crash, crash_at, exactly_once, rig  # noqa: F401  (the fixture)


def test_operations_are_counted_by_class_and_priced():
    ops = {"insert": 3, "list": 1, "copy": 1, "get": 4, "read": 6, "delete": 9, "job_insert": 2, "query": 1}
    assert billing.by_class(ops) == {"class_a": 5, "class_b": 10, "free": 9, "bigquery": 3}
    assert billing.usd(ops, 5.0, 0.5) == pytest.approx(5 / 1000 * 5.0 + 10 / 1000 * 0.5)
    assert billing.describe(ops) == "5 class A, 10 class B requests, 3 BigQuery API calls"
    with pytest.raises(ValueError, match="unknown operation 'upload'"):
        billing.RequestCounts().add("upload")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("insert=1,get=2", {"insert": 1, "get": 2}),
        ("", {}),
        (None, {}),
        ("insert=1,insert=2", {"insert": 3}),
        ("insert=-1,get=2", {"get": 2}),  # a negative count is not a count
        ("insert=1.5", {}),
        ("upload=3,list=1", {"list": 1}),  # an operation nobody bills
        ("insert", {}),
        ("=5", {}),
        ("insert=1,,get=1", {"insert": 1, "get": 1}),
        ("insert=١", {}),  # a digit of another script
        ("x" * 10_000, {}),
    ],
)
def test_counts_in_metadata_read_back_only_what_they_can_mean(text, expected):
    assert billing.decode_ops(text) == expected


@pytest.mark.parametrize(
    "doc, expected",
    [
        ({"insert": 2}, {"insert": 2}),
        ({"insert": "2"}, {}),
        ({"insert": True, "get": 1}, {"get": 1}),  # bool is an int to Python, not a count
        ({"insert": -3}, {}),
        (["insert", 1], {}),
        ("insert=1", {}),
        (None, {}),
        ({"nope": 1}, {}),
    ],
)
def test_counts_in_json_read_back_only_what_they_can_mean(doc, expected):
    assert billing.checked_ops(doc) == expected


def test_tags_follow_the_thread_and_a_pool_that_keeps_them():
    counts = billing.RequestCounts()
    with billing.spending("tasks"):
        counts.add("insert")
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(billing.keeping_tag(lambda _: counts.add("read")), range(8)))
            list(pool.map(lambda _: counts.add("get"), range(2)))  # a plain pool thread has no tag
    counts.add("list")
    assert counts.take("tasks") == {"insert": 1, "read": 8}
    assert counts.take("tasks") == {}  # taken once
    assert counts.take(None) == {"get": 2, "list": 1}
    with billing.spending("tasks"):
        counts.prepay("tasks", {"insert": 1})  # a summary counts its own insert before sending it
        counts.add("insert")
        counts.add("list")
    assert counts.take("tasks") == {"list": 1}
    counts.give_back("tasks", {"get": 3})  # a record that failed to be written
    assert counts.untaken() == {"tasks": {"get": 3}}
    assert counts.snapshot() == {"insert": 2, "read": 8, "get": 2, "list": 2}


def test_concurrent_adds_lose_nothing():
    counts = billing.RequestCounts()

    def work(tag):
        with billing.spending(tag):
            for _ in range(1000):
                counts.add("insert")

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts.snapshot() == {"insert": 8000}
    assert sum(counts.take(f"t{i}")["insert"] for i in range(8)) == 8000


def test_every_fake_call_is_counted_in_its_class(tmp_path):
    store = MemoryObjectStore()
    f = tmp_path / "f"
    f.write_bytes(b"x")
    store.upload("a/1", f)  # insert
    store.write_object("a/2", b"{}", 0)  # insert
    store.list_objects("a/")  # list
    store.stat("a/1")  # get
    store.read_object("a/2")  # get + read
    store.download("a/1", tmp_path / "g")  # read
    store.copy_object("a/1", "b/1")  # get + copy
    store.move_object("a/2", "b/2")  # copy + delete
    store.delete_objects(["a/1", "b/1"])  # 2 deletes
    store.set_lifecycle([])  # patch
    assert store.requests.snapshot() == {
        "insert": 2,
        "list": 1,
        "get": 3,
        "read": 2,
        "copy": 2,
        "delete": 3,
        "patch": 1,
    }
    for n in range(2500):
        store.put(f"c/{n}", b"")
    before = store.requests.snapshot()
    store.list_objects("c/")
    assert store.requests.since(before) == {"list": 3}  # a page per 1,000

    warehouse = MemoryWarehouse(store, EIXA)
    assert warehouse.requests.snapshot() == {"table_admin": len(EIXA)}
    uri = store.uri("c/0")
    warehouse.start_load("j1", "tasks", [uri])
    warehouse.get_job("j1")
    warehouse.wait("j1")
    warehouse.dry_run("SELECT 1")
    assert warehouse.requests.since({"table_admin": len(EIXA)}) == {"job_insert": 1, "job_lookup": 2, "query": 1}


def _recorded(store: MemoryObjectStore, layout: Layout) -> dict[str, int]:
    """What the bucket says was spent: summaries, staged objects not loaded yet, the released lease."""
    out: dict[str, int] = {}
    for name, meta in store.meta.items():
        if name.startswith(layout.area("commit-archive")) or name.startswith(layout.staged()):
            billing.add_ops(out, billing.decode_ops(meta.metadata.get(billing.OPS_KEY)))
    lease = store.objects.get(layout.lease)
    if lease:
        billing.add_ops(out, billing.checked_ops(json.loads(lease).get("unrecorded")))
    return out


def _balance(store) -> dict[str, int]:
    """Counted minus recorded minus waiting to be recorded, per operation: all zero when nothing is lost."""
    counted = store.requests.snapshot()
    recorded = _recorded(store, Layout("bqspool"))
    for ops in store.requests.untaken().values():
        billing.add_ops(recorded, ops)
    return {op: counted.get(op, 0) - recorded.get(op, 0) for op in set(counted) | set(recorded)}


def test_every_request_of_a_drain_is_recorded_once(rig):  # noqa: F811
    appended = rig.fill({"tasks": 30, "user_interactions": 20, "routines": 5}, per_call=5)
    drainer = rig.drainer(batch_rows=5)
    report = drainer.drain_once()
    assert report.ship.requests == {"insert": 11}  # one upload an object, nothing else
    # Shared: staged twice (is there anything? then under the lease), and the log three times (two
    # rounds, the rule's check); each table loaded its budget and its archive index. The two quiet
    # tables of the set cost nothing: only `run` counts them, for its metrics.
    assert report.commit.requests["list"] == 5 + 3 + 3 and len(EIXA) == 5
    # Each object read once (class B), merged into its archive file while its job ran.
    assert report.commit.requests["read"] == 11
    assert not any(_balance(rig.store).values())
    # A second drain with nothing new costs one listing, and records what the first left in the lease.
    idle = drainer.commit_once()
    assert idle.idle and idle.requests == {"list": 1}
    more = rig.fill({"tasks": 5}, seed=2)
    drainer.drain_once()
    assert not any(_balance(rig.store).values())
    # What a commit sends after its last summary waits for the next: this commit's release.
    lease = json.loads(rig.store.objects["bqspool/committer.lease"])
    assert lease["unrecorded"] == {"insert": 1, "delete": 2}
    exactly_once(rig, {**appended, "tasks": appended["tasks"] + more["tasks"]})


@pytest.mark.parametrize("point", ["after_record", "after_job_done", "after_archive_write", "after_summary"])
def test_a_commit_killed_midway_records_nothing_twice(rig, point):  # noqa: F811
    appended = rig.fill({"tasks": 20}, per_call=5)
    drainer = rig.drainer(batch_rows=5)
    drainer.ship_once()
    with crash_at(point), pytest.raises(Crash):
        drainer.commit_once()
    rig.clock.now += 600  # the dead committer's lease expires
    rig.drainer(batch_rows=5).commit_once()
    summaries = [n.rpartition("/")[2] for n in rig.store.objects if "/commit-archive/" in n]
    assert len(summaries) == len({n.split(".")[0] for n in summaries})  # one summary a record
    # Counted once each, wherever the crash fell: no summary recorded another's requests again.
    # (A real kill -9 loses what the dead process had not recorded; the simulated one unwinds.)
    assert not any(_balance(rig.store).values())
    exactly_once(rig, appended)


def test_a_committer_alone_reads_the_archive_and_the_closed_log_once(rig):  # noqa: F811
    """What a committer read of the archive (the copy screen's index) and of the closed
    log (the budget) stays true while it alone commits: it adds what it writes. When
    another committer held the lease meanwhile, it reads both again."""
    drainer = rig.drainer(batch_rows=5)
    appended = rig.fill({"tasks": 10})
    drainer.drain_once()
    more = rig.fill({"tasks": 10}, seed=1)
    report = drainer.drain_once()
    assert report.commit.requests["list"] == 5  # staged twice, the log three times: nothing per table
    other = rig.fill({"tasks": 5}, seed=2)
    rig.drainer(batch_rows=5).drain_once()  # another committer
    last = rig.fill({"tasks": 5}, seed=3)
    report = drainer.drain_once()
    assert report.commit.requests["list"] == 5 + 2  # and the table's budget and archive index, afresh
    exactly_once(rig, {"tasks": appended["tasks"] + more["tasks"] + other["tasks"] + last["tasks"]})
