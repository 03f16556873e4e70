"""No load job modifies more partitions than the warehouse allows, and a table's count stays in view.

BigQuery rejects a load job that modifies more than 4,000 partitions and a
table past 10,000. The fakes declare smaller limits (``WarehouseLimits``)
and enforce them as BigQuery does, so a backfill of a few days exercises
the grouping and the split; the local stack's emulator enforces neither,
so there each job's sources are read as it is started.
"""

from __future__ import annotations

import datetime as dt
import time

import pyarrow as pa
import pytest
from bqspool.buffer import Buffer
from bqspool.loader import partitions
from bqspool.loader.drain import Drainer
from bqspool.loader.interfaces import WarehouseLimits
from bqspool.loader.layout import Layout
from bqspool.loader.operate.verify import drift
from bqspool.loader.settings import Settings
from bqspool.loader.testing import MemoryObjectStore, MemoryWarehouse
from bqspool.schemas import load_schema_set
from bqspool.schemas.definition import Partitioning

EIXA = load_schema_set("eixa")
DAY = 86_400
START = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC).timestamp()


def _utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("unit", "values", "want"),
    [
        ("DAY", [_utc(2026, 12, 4, 1), _utc(2026, 12, 4, 23), _utc(2026, 12, 5)], ["20261204", "20261205"]),
        (
            "HOUR",
            [_utc(2026, 12, 4, 1, 5), _utc(2026, 12, 4, 1, 59), _utc(2026, 12, 4, 2)],
            ["2026120401", "2026120402"],
        ),
        ("MONTH", [_utc(2026, 1, 31), _utc(2026, 2, 1)], ["202601", "202602"]),
        ("YEAR", [_utc(2026, 1, 1), _utc(2026, 12, 31)], ["2026"]),
        (
            "DAY",
            [None, _utc(1900, 1, 1), _utc(2200, 1, 1), _utc(2026, 1, 1)],
            ["20260101", "__NULL__", "__UNPARTITIONED__"],
        ),
    ],
)
def test_partitions_are_named_as_bigquery_names_them(unit, values, want):
    rows = pa.table({"t": pa.array(values, pa.timestamp("us", tz="UTC"))})
    assert partitions.names(rows, Partitioning("t", unit)) == want


def test_a_date_column_and_an_unpartitioned_table():
    rows = pa.table({"d": pa.array([dt.date(2026, 5, 1), dt.date(2026, 5, 2)])})
    assert partitions.names(rows, Partitioning("d", "MONTH")) == ["202605"]
    assert partitions.names(rows, None) == ["__UNPARTITIONED__"]


@pytest.mark.parametrize(
    ("value", "count", "named"),
    [
        ("20261204,20261205", 2, {"20261204", "20261205"}),
        ("5000 partitions", 5000, None),
        (None, 1, {"(not recorded)"}),
        ("", 1, {"(not recorded)"}),
        ("many partitions", 1, {"(not recorded)"}),  # garbage someone else wrote: counted as unknown
        ("0 partitions", 1, None),
    ],
)
def test_an_objects_span_is_read_back_from_its_metadata(value, count, named):
    span = partitions.Span.decode(value)
    assert span.count == count
    assert (set(span.names) if span.names is not None else None) == named


def test_a_span_is_written_by_name_when_few_and_counted_when_many():
    few = partitions.Span.of([f"2026010{i}" for i in range(1, 4)])
    assert partitions.Span.decode(few.encode()) == few
    many = partitions.Span.of([f"p{i}" for i in range(partitions.LISTED + 1)])
    assert many.encode() == f"{partitions.LISTED + 1} partitions" and partitions.Span.decode(many.encode()) == many
    # Named partitions are counted once however many objects hold them; counted ones add up.
    assert partitions.union_bound([few, few, partitions.Span.decode("20260101,20261231"), partitions.Span(30)]) == 34


def test_a_cut_puts_the_first_partitions_on_one_side_and_the_rest_on_the_other():
    times = [_utc(2026, 1, 1 + i % 6, i % 24) for i in range(60)]
    rows = pa.table({"t": pa.array(times, pa.timestamp("us", tz="UTC")), "i": list(range(60))})
    part = Partitioning("t", "DAY")
    ordered, at = partitions.cut(rows, part, 4)
    assert partitions.names(ordered.slice(0, at), part) == ["20260101", "20260102", "20260103", "20260104"]
    assert partitions.names(ordered.slice(at), part) == ["20260105", "20260106"]
    assert sorted(ordered.column("i").to_pylist()) == list(range(60))  # no row lost or repeated
    again, at_again = partitions.cut(rows, part, 4)
    assert again.equals(ordered) and at_again == at  # the same rows give the same halves


def _rig(tmp_path, limits: WarehouseLimits):
    store = MemoryObjectStore()
    warehouse = MemoryWarehouse(store, EIXA, limits=limits)
    drainer = Drainer(
        tmp_path / "b.db",
        EIXA,
        store,
        warehouse,
        Settings(prefix="p", batch_rows=10_000),
        staging_dir=tmp_path / "staging",
        progress=False,
    )
    return store, warehouse, drainer


def _backfill(tmp_path, days: int, per_day: int = 3) -> int:
    with Buffer(tmp_path / "b.db", EIXA) as buf:
        for d in range(days):
            for i in range(per_day):
                buf.append("tasks", {"user_id": "u", "task_id": f"{d}-{i}", "created_at": START + d * DAY + i})
    return days * per_day


def test_the_fake_rejects_a_job_over_the_limit_as_bigquery_does(tmp_path):
    store, warehouse, _ = _rig(tmp_path, WarehouseLimits(partitions_per_job=3))
    rows = pa.table({"_event_id": ["a", "b", "c", "d"], "user_id": ["u"] * 4, "task_id": list("abcd")})
    rows = rows.append_column(
        "created_at", pa.array([_utc(2026, 1, d) for d in (1, 2, 3, 4)], pa.timestamp("us", tz="UTC"))
    )
    import pyarrow.parquet as pq

    pq.write_table(rows, tmp_path / "wide.parquet")
    store.upload("x/wide.parquet", tmp_path / "wide.parquet")
    outcome = warehouse.start_load("j1", "tasks", [store.uri("x/wide.parquet")])
    assert outcome.error is not None and "Too many partitions" in outcome.error.message
    assert warehouse.fetch_rows("tasks") == []


def test_a_backfill_wider_than_a_job_is_split_by_partition_and_loads_once(tmp_path):
    """One object spans 11 days; the limit is 4 a job: it is split into 4 + 7, then 4 + 3,
    each half loads alone, no event is a dead letter and every event loads once."""
    store, warehouse, drainer = _rig(tmp_path, WarehouseLimits(partitions_per_job=4))
    sent = _backfill(tmp_path, days=11)
    report = drainer.drain_once()
    assert report.events_loaded == sent
    assert sorted(warehouse.ids("tasks").values()) == [1] * sent
    jobs = [r for r in warehouse.recorded if r["call"] == "load"]
    assert len(jobs) == 3  # 4 + 4 + 3 days
    layout = Layout("p")
    assert not store.list_objects(layout.area("dead")) and not store.list_objects(layout.area("quarantine"))
    assert len(store.list_objects(layout.area("split"))) == 2  # the object and its wide half
    assert not [o for o in warehouse.jobs.values() if o.outcome.error is not None]


def test_objects_are_grouped_so_that_no_job_passes_the_limit(tmp_path):
    """Many objects of a day or two each: grouped by the partitions they name, never over
    the limit, and none split."""
    store, warehouse, drainer = _rig(tmp_path, WarehouseLimits(partitions_per_job=3))
    drainer.settings = Settings(prefix="p", batch_rows=4)
    drainer.shipping.settings = drainer.settings
    sent = _backfill(tmp_path, days=8, per_day=4)  # 8 objects of one day each
    assert drainer.drain_once().events_loaded == sent
    assert sorted(warehouse.ids("tasks").values()) == [1] * sent
    assert not [o for o in warehouse.jobs.values() if o.outcome.error is not None]
    assert not store.list_objects(Layout("p").area("split"))
    assert len([r for r in warehouse.recorded if r["call"] == "load"]) == 3  # 3 + 3 + 2 days


def test_verify_warns_when_a_table_holds_80_percent_of_its_partitions(tmp_path):
    _, warehouse, drainer = _rig(tmp_path, WarehouseLimits(partitions_per_table=10))
    _backfill(tmp_path, days=7)
    drainer.drain_once()
    assert not [d for d in drift(warehouse, EIXA) if d.what == "partitions"]  # 7 of 10
    _backfill(tmp_path, days=8)  # one more day
    drainer.drain_once()
    (found,) = [d for d in drift(warehouse, EIXA) if d.what == "partitions"]
    assert found.table == "tasks" and found.actual == "8 (80%)" and found.fix is None
    assert "expiration_days" in found.advice


def test_on_the_local_stack_a_small_declared_limit_splits_the_backfill(stack, tmp_path):
    """The emulator enforces no partition limit, so each job's sources are read as it starts:
    none may name more partitions than the declared limit."""
    from .loader_support import Env

    env = Env(tmp_path, "eixa")
    drainer = env.drainer()
    committer = drainer.committer
    warehouse = committer.warehouse
    warehouse.limits = WarehouseLimits(partitions_per_job=2)
    spans: list[int] = []
    start = warehouse.start_load

    def reading(job_id, table, uris):
        names = [u.split("/", 3)[3] for u in uris]
        spans.append(partitions.union_bound(partitions.spans(committer.objects.stat(n) for n in names).values()))
        return start(job_id, table, uris)

    warehouse.start_load = reading
    with Buffer(env.config.buffer, "eixa") as buf:
        for d in range(5):
            buf.append("tasks", {"user_id": "u", "task_id": str(d), "created_at": time.time() - d * DAY})
    assert drainer.drain_once().events_loaded == 5
    assert spans and max(spans) <= 2 and len(spans) == 3, spans
    assert len(env.bucket("split")) == 2 and not env.bucket("dead")
    rows = env.warehouse.fetch_rows("tasks")
    assert sorted(r["task_id"] for r in rows) == ["0", "1", "2", "3", "4"]


def test_a_split_killed_before_its_move_loads_each_event_once(tmp_path):
    """Killed after its halves were uploaded and before the object moved to split/: the next
    commit finds the object and its halves staged, spreads it again (the same halves) and
    loads every event once."""
    from bqspool.loader.commit.split import Splitter

    store, warehouse, drainer = _rig(tmp_path, WarehouseLimits(partitions_per_job=4))
    sent = _backfill(tmp_path, days=11)
    drainer.ship_once()
    layout = Layout("p")
    (obj,) = store.list_objects(layout.staged("tasks"))
    data = store.objects[obj.name]
    splitter = Splitter(store, layout)
    splitter.partitioning = {"tasks": EIXA["tasks"].partitioning}
    splitter.spread(obj.name, 4)
    store.delete_objects([layout.moved(obj.name, "split")])
    store.put(obj.name, data, obj.metadata)  # as if the move had not happened
    assert len(store.list_objects(layout.staged("tasks"))) == 3
    assert drainer.commit_once().events_loaded == sent
    assert sorted(warehouse.ids("tasks").values()) == [1] * sent


def test_a_committer_not_told_the_partitioning_leaves_a_wide_object_whole(tmp_path):
    """A committer made without the schema set cannot cut an object by partition: it loads
    it alone, never twice, and does not fail."""
    from bqspool.loader.commit.committer import Committer

    store, warehouse, drainer = _rig(tmp_path, WarehouseLimits(partitions_per_job=50))
    sent = _backfill(tmp_path, days=60, per_day=1)
    drainer.ship_once()
    report = Committer(store, warehouse, Settings(prefix="p")).commit_once()
    assert report.events_loaded == sent and sorted(warehouse.ids("tasks").values()) == [1] * sent
