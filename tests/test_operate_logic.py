"""Query files, schema drift and restore decisions, without servers (the real-stack tests are in test_operate)."""

import datetime as dt
import logging

import pytest
from bqspool.loader import progress
from bqspool.loader.layout import Layout
from bqspool.loader.operate.restore import Restore, parse_day, restored_name
from bqspool.loader.operate.verify import drift, fix
from bqspool.loader.testing import MemoryObjectStore, MemoryWarehouse
from bqspool.schemas import load_schema_set, parse_table
from bqspool.schemas.errors import ConfigError, RestoreRefusedError, SchemaError, ValidationError
from bqspool.schemas.queries import load_queries, load_query_file

GOOD = "-- what it does\n-- @param user_id STRING  who\n-- @param days INT64 = 7  how far\nSELECT 1 FROM t WHERE u = @user_id AND d < @days\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("-- @param x STRING\nSELECT 1", "declares x but never uses it"),
        ("SELECT @x", "uses @x without declaring it"),
        ("-- @param x TEXT\nSELECT @x", "TYPE one of"),
        ("-- @param x\nSELECT @x", "-- @param NAME TYPE"),
        ("-- @param x INT64 = seven\nSELECT @x", "parameter x (INT64)"),
        ("-- @param x STRING\n-- @param x STRING\nSELECT @x", "declared twice"),
        ("-- only a comment\n", "no SQL after the comment"),
        (b"\xff\xfe".decode("latin-1") + "SELECT 1", None),  # odd bytes are fine as long as they decode
    ],
)
def test_bad_query_files_are_refused_with_file_and_reason(tmp_path, text, message):
    path = tmp_path / "q.sql"
    path.write_text(text, encoding="utf-8")
    if message is None:
        assert load_query_file(path).sql
        return
    with pytest.raises(SchemaError) as err:
        load_query_file(path)
    assert message in str(err.value) and "q.sql" in str(err.value)


def test_a_query_file_name_and_parameter_values_are_checked(tmp_path):
    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "Bad Name.sql").write_text("SELECT 1")
    with pytest.raises(SchemaError, match="lowercase"):
        load_queries(tmp_path)
    (tmp_path / "queries" / "Bad Name.sql").unlink()
    (tmp_path / "queries" / "q.sql").write_text(GOOD)
    q = load_queries(tmp_path)["q"]
    assert q.description == "what it does"
    assert q.values({"user_id": "a"}) == {"user_id": "a", "days": 7}
    assert q.values({"user_id": "a", "days": "3"})["days"] == 3
    for given, message in [
        ({}, "needs --param user_id"),
        ({"user_id": 5}, "expected text"),
        ({"user_id": "a", "days": True}, "expected an integer"),
        ({"user_id": "a", "days": "1.5"}, "not valid"),
        ({"user_id": "a", "other": 1}, "no parameter other"),
    ]:
        with pytest.raises(ValidationError, match=message):
            q.values(given)


def test_the_bundled_sets_carry_the_seeds_queries():
    assert set(load_schema_set("leafloaf").queries) == {"recent-activity", "user-engagement", "popular-products"}
    eixa = load_schema_set("eixa").queries
    assert set(eixa) == {"user-analytics", "task-completion-rate", "recent-chat-history"}
    assert [p.name for p in eixa["user-analytics"].params] == ["user_id", "days"]


def _table(**options):
    fields = [
        {"name": "ts", "type": "TIMESTAMP", "mode": "REQUIRED"},
        {"name": "user_id", "type": "STRING"},
        {"name": "n", "type": "INTEGER", "mode": "REQUIRED"},
    ]
    return parse_table("t", {"fields": fields, "time_partitioning": {"field": "ts"}, **options})


class _Set:
    def __init__(self, table):
        self.t = table
        self.name = "s"

    def tables(self):
        return [self.t]

    def __getitem__(self, name):
        return self.t

    def __iter__(self):
        return iter([self.t.name])


def test_drift_tells_safe_fixes_from_refusals_and_fix_applies_only_the_safe():
    wh = MemoryWarehouse(MemoryObjectStore())
    sset = _Set(_table())
    assert [d.what for d in drift(wh, sset)] == ["table"]
    fix(wh, sset, drift(wh, sset))
    assert drift(wh, sset) == []
    wh.tables["t"].columns["n"] = ("STRING", "REQUIRED")  # retyped
    wh.tables["t"].columns["ts"] = ("TIMESTAMP", "NULLABLE")  # relaxed in the warehouse: the file tightens
    del wh.tables["t"].columns["user_id"]
    wh.tables["t"].columns["extra"] = ("STRING", "NULLABLE")
    wh.tables["t"].options["labels"] = {"team": "x"}
    grown = _Set(_table(labels={"app": "a"}, clustering=["user_id"]))
    found = {d.what: d for d in drift(wh, grown)}
    assert set(found) == {"column n type", "column ts mode", "column user_id", "column extra", "labels", "clustering"}
    assert {w for w, d in found.items() if d.fix} == {"column user_id", "labels", "clustering"}
    assert "tightening a mode" in found["column ts mode"].advice
    assert "never drops a column" in found["column extra"].advice
    fix(wh, grown, list(found.values()))
    left = {d.what for d in drift(wh, grown)}
    assert left == {"column n type", "column ts mode", "column extra"}
    assert wh.tables["t"].options["labels"] == {"team": "x", "app": "a"}  # others' labels stay


def test_restore_days_names_and_refusal_on_fakes(tmp_path):
    today = dt.date(2026, 11, 29)
    assert parse_day("3d", today) == dt.date(2026, 11, 26)
    assert parse_day("2026-11-02T23:30:00-05:00", today) == dt.date(2026, 11, 3)
    with pytest.raises(ConfigError):
        parse_day("soon", today)
    layout = Layout("p")
    name = "p/archive/tasks/2026/11/28/tasks-b-0001-0002-abc-n2.parquet"
    assert (
        restored_name(layout, name, "copy", "0123456789")
        == "p/staged/copy/2026-11-28/tasks-b-0001-0002-abc-r0123456789-n2.parquet"
    )
    half = "p/archive/tasks/2026/11/28/tasks-b-abc-n4~a2.parquet"
    assert "~" not in restored_name(layout, half, "copy", "0123456789")

    import pyarrow as pa
    import pyarrow.parquet as pq

    sset = load_schema_set("eixa")
    store = MemoryObjectStore()
    wh = MemoryWarehouse(store, sset)
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"_event_id": ["e0", "e1", "e2"]}), path)
    store.put(name, path.read_bytes())
    wh.tables["tasks"].rows.append({"_event_id": "e1"})
    job = Restore(
        store, wh, sset, layout, "tasks", today - dt.timedelta(days=1), today, commit=lambda cb: None, progress=False
    )
    with pytest.raises(RestoreRefusedError, match="already holds rows of 1 of the 1"):
        job.run()
    assert store.list_objects("p/staged/") == []  # refused before anything was staged


def test_a_restore_on_fakes_loads_each_object_once_and_shows_its_progress(tmp_path, monkeypatch, caplog):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from bqspool.loader.commit.committer import Committer
    from bqspool.loader.settings import Settings

    sset = load_schema_set("eixa")
    store = MemoryObjectStore()
    wh = MemoryWarehouse(store, sset)
    layout = Layout("p")
    today = dt.date(2026, 11, 29)
    ids = []
    for k in range(3):
        path = tmp_path / f"{k}.parquet"
        batch = [f"e{k}-{i}" for i in range(4)]
        ids += batch
        rows = {
            "_event_id": batch,
            "user_id": ["u"] * 4,
            "task_id": batch,
            "created_at": pa.array([dt.datetime(2026, 11, 28, tzinfo=dt.UTC)] * 4, pa.timestamp("us", "UTC")),
        }
        pq.write_table(pa.table(rows), path)
        store.put(f"p/archive/tasks/2026/11/28/tasks-b{k}-abc-t1795000000000-n4.parquet", path.read_bytes())

    def commit(on_loaded):
        return Committer(store, wh, Settings(prefix="p"), on_loaded=on_loaded).commit_once()

    job = Restore(store, wh, sset, layout, "tasks", dt.date(2026, 11, 28), today, "tasks_copy", commit=commit)
    monkeypatch.setitem(progress.Progress.__init__.__kwdefaults__, "every_s", 0.0)  # a progress line each step
    with caplog.at_level(logging.INFO, logger="bqspool.loader"):
        report = job.run()
    assert (report.selected, report.copied, report.loaded_objects, report.loaded_events) == (3, 3, 3, 12)
    assert report.created_table and sorted(wh.ids("tasks_copy")) == sorted(ids)
    said = [r.getMessage() for r in caplog.records]
    assert "restore: copying: 3 of 3 objects" in " ".join(said) and any(
        m.startswith("restore: loading: 3 of 3 objects") for m in said
    ), said
    again = Restore(store, wh, sset, layout, "tasks", dt.date(2026, 11, 28), today, "tasks_copy", commit=commit)
    assert again.run().copied == 0 and sorted(wh.ids("tasks_copy")) == sorted(ids)  # nothing twice
