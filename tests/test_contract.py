"""What bqspool relies on from an object store and a warehouse, for every backend.

Each test runs against the in-memory fakes, the local stack (fake-gcs-server
and the BigQuery emulator, through the real Google clients), and a real
Google Cloud project when ``BQSPOOL_TEST_GCP_PROJECT``,
``BQSPOOL_TEST_GCP_BUCKET`` and ``BQSPOOL_TEST_GCP_DATASET`` are set (see
docs/testing.md). Where the emulator differs from BigQuery, the test of
BigQuery's behaviour is a strict expected failure on the local stack, with
the reason: a fixed emulator shows up as a failing test to update.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import uuid
from dataclasses import replace

import pytest
from bqspool.loader.interfaces import ObjectStore, Warehouse
from bqspool.loader.ship.stage import Stager
from bqspool.schemas.definition import parse_table
from bqspool.schemas.errors import BackendError, ObjectConflictError, PreconditionFailedError

GCP = ("BQSPOOL_TEST_GCP_PROJECT", "BQSPOOL_TEST_GCP_BUCKET", "BQSPOOL_TEST_GCP_DATASET")


class Backend:
    def __init__(self, kind, store, warehouse, prefix, raw_client=None):
        self.kind, self.store, self.warehouse, self.prefix, self.raw = kind, store, warehouse, prefix, raw_client


@pytest.fixture(params=["fake", "local", "gcp"])
def backend(request, tmp_path_factory):
    kind = request.param
    prefix = f"contract/{uuid.uuid4().hex[:10]}"
    if kind == "fake":
        from bqspool.loader.testing import MemoryObjectStore, MemoryWarehouse

        store = MemoryObjectStore()
        yield Backend(kind, store, MemoryWarehouse(store), prefix)
        return
    from bqspool.loader.backends.google_clients import bigquery_client
    from bqspool.loader.clients import make_object_store, make_warehouse
    from bqspool.loader.config import load_config

    if kind == "local":
        request.getfixturevalue("stack")
        cfg = replace(
            load_config(env=os.environ),
            dataset=f"c_{uuid.uuid4().hex[:10]}",
            retry_initial=0.05,
            retry_maximum=0.5,
            retry_deadline=5.0,
        )
    else:
        missing = [v for v in GCP if not os.environ.get(v)]
        if missing:
            pytest.skip(f"a real project is tested only with {', '.join(GCP)} set (docs/testing.md)")
        cfg = replace(
            load_config(env={}),
            project=os.environ[GCP[0]],
            bucket=os.environ[GCP[1]],
            dataset=os.environ[GCP[2]],
            location=os.environ.get("BQSPOOL_TEST_GCP_LOCATION", "US"),
        )
    warehouse = make_warehouse(cfg)
    warehouse.ensure_dataset()
    yield Backend(kind, make_object_store(cfg), warehouse, prefix, bigquery_client(cfg))
    if kind == "gcp":  # what the suite created there: its tables and objects
        client = bigquery_client(cfg)
        for t in client.list_tables(cfg.dataset):
            if t.table_id.startswith("contract_"):
                client.delete_table(t, not_found_ok=True)


LOCAL_DIFFERENCES: dict[str, str] = {
    "test_a_duplicate_job_id_is_refused_by_the_backend": "the emulator runs a duplicate job id again instead of answering 409; bqspool looks every job up before "
    "inserting it, so it never relies on the 409",
    "test_parquet_columns_are_matched_by_name": "the emulator inserts Parquet columns by position; bqspool writes them in table order",
    "test_key_value_folders_add_no_columns": "the emulator reads key=value path segments as hive partition columns; bqspool puts no '=' in names",
    "test_require_partition_filter_is_kept": "the emulator does not keep a table's require_partition_filter (setup sets it; verify cannot see it)",
    "test_each_type_round_trips[GEOGRAPHY]": "the emulator's REST answers mangle GEOGRAPHY cells (tests elsewhere read them with ST_ASTEXT)",
    "test_each_type_round_trips[BIGNUMERIC]": "the emulator's DuckDB has no 76-digit decimal for BIGNUMERIC",
    "test_a_dry_run_says_what_a_query_scans": "the emulator's dry runs report 0 bytes: `verify` prints what it is told",
    "test_table_storage_is_reported": "the emulator reports 0 rows and 0 bytes for every table: `cost` says storage "
    "is not available here",
    "test_query_history_is_kept": "the emulator has no INFORMATION_SCHEMA.JOBS: `cost` says query cost is not "
    "available here",
    "test_the_bucket_keeps_lifecycle_rules": "fake-gcs-server accepts lifecycle rules and forgets them: `setup` warns",
    "test_an_object_keeps_8_kib_of_metadata_and_a_listing_shows_it": "fake-gcs-server keeps an object's attributes "
    "in one extended attribute of its file (4 KiB on ext4) and answers 500 past it; an archive file's index stays "
    "under 3,000 characters (commit/archiver.py MAX_INDEX)",
    "test_a_rejected_job_of_several_objects_writes_nothing": "the emulator writes the rows of a job's objects read "
    "before the one it rejects; BigQuery writes nothing. The exactly-once tests on the local stack fail loudly if "
    "a job of several objects was rejected (loader_support.no_rejected_group)",
}


@pytest.fixture(autouse=True)
def _emulator_differences(request):
    if "backend" not in request.fixturenames:
        return
    kind = request.node.callspec.params.get("backend")
    name = request.node.name.replace(f"-{kind}", "").replace(f"[{kind}]", "").replace(f"{kind}-", "")
    reason = LOCAL_DIFFERENCES.get(name)
    if kind == "local" and reason:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))


def _table(name, fields, **options):
    return parse_table(name, {"fields": fields, **options})


def _staged(tmp_path, table, rows, name="f.parquet"):
    """Stage ``rows`` (stored form, with _event_id) as bqspool does; the file's path."""
    path = tmp_path / name.replace("/", "_")
    Stager(table).write(["\n".join(json.dumps(r, separators=(",", ":")) for r in rows)], path)
    return path


def _fresh(name):
    return f"contract_{name}_{uuid.uuid4().hex[:8]}"


SIMPLE = [{"name": "id", "type": "STRING", "mode": "REQUIRED"}, {"name": "n", "type": "INTEGER"}]


# -- the object store -----------------------------------------------------------


def test_both_implement_the_interfaces(backend):
    assert isinstance(backend.store, ObjectStore) and isinstance(backend.warehouse, Warehouse)


def test_upload_creates_an_object_once_and_an_identical_retry_succeeds(backend, tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"some parquet bytes" * 100)
    name = f"{backend.prefix}/a.parquet"
    first = backend.store.upload(name, path)
    assert first.name == name and first.size == 1800 and first.checksum
    again = backend.store.upload(name, path)  # a 412: the same bytes are success
    assert again.size == first.size and again.checksum == first.checksum
    assert backend.store.uri(name).endswith(name)


# One request, streamed from the file, up to MULTIPART_MAX; a resumable session above
# (here above 8 MiB, to keep the test small), whose precondition fake-gcs-server
# ignores (the adapter looks first).
@pytest.mark.parametrize(
    "size, multipart_max",
    [(30, None), (9 * 1024 * 1024, None), (9 * 1024 * 1024 + 3, 8 * 1024 * 1024)],
    ids=["small", "streamed", "resumable"],
)
def test_other_bytes_under_the_same_name_are_a_conflict(backend, tmp_path, monkeypatch, size, multipart_max):
    from bqspool.loader.backends import gcs

    if multipart_max:
        monkeypatch.setattr(gcs, "MULTIPART_MAX", multipart_max)
    name = f"{backend.prefix}/b{size}.parquet"
    (tmp_path / "one").write_bytes(b"one" * (size // 3))
    (tmp_path / "two").write_bytes(b"two" * (size // 3))
    first = backend.store.upload(name, tmp_path / "one")
    assert first.size == size and backend.store.upload(name, tmp_path / "one").checksum == first.checksum
    with pytest.raises(ObjectConflictError):
        backend.store.upload(name, tmp_path / "two")
    data = backend.store.read_object(name).data
    assert data == (tmp_path / "one").read_bytes()  # the first upload's bytes stay


def test_a_create_only_write_succeeds_once(backend):
    name = f"{backend.prefix}/log/c1.json"
    first = backend.store.write_object(name, b'{"n": 1}', 0)
    assert first.generation > 0
    with pytest.raises(PreconditionFailedError):
        backend.store.write_object(name, b'{"n": 2}', 0)
    assert backend.store.read_object(name)[:2] == (b'{"n": 1}', first.generation)


def test_a_write_under_a_stale_generation_is_refused(backend):
    name = f"{backend.prefix}/lease.json"
    g1 = backend.store.write_object(name, b"a", 0).generation
    g2 = backend.store.write_object(name, b"b", g1).generation
    assert g2 != g1
    with pytest.raises(PreconditionFailedError):
        backend.store.write_object(name, b"c", g1)  # a paused holder's renewal
    assert backend.store.read_object(name)[:2] == (b"b", g2)
    assert backend.store.read_object(f"{backend.prefix}/absent.json") is None


def test_a_listing_shows_every_object_just_written_with_its_creation_time(backend):
    import time

    names = [f"{backend.prefix}/list/{i:03d}.json" for i in range(25)]
    for n in names:
        backend.store.write_object(n, b"x", 0)
    listed = backend.store.list_objects(f"{backend.prefix}/list/")
    assert [o.name for o in listed] == names  # strongly consistent, in name order
    assert all(o.size == 1 and o.generation > 0 for o in listed)
    assert all(abs(o.created - time.time()) < 300 for o in listed)
    assert backend.store.list_objects(f"{backend.prefix}/nothing/") == []


def test_metadata_an_archive_file_carries_is_kept_and_listed(backend, tmp_path):
    from bqspool.loader.commit.archiver import MAX_INDEX

    path = tmp_path / "a.parquet"
    path.write_bytes(b"x" * 100)
    index = ",".join(f"{i:020x}" for i in range(MAX_INDEX // 21))
    backend.store.upload(
        f"{backend.prefix}/meta/a.parquet", path, {"bqspool-objects": index, "bqspool-ops": "insert=1"}
    )
    (listed,) = backend.store.list_objects(f"{backend.prefix}/meta/")
    assert listed.metadata["bqspool-objects"] == index and listed.metadata["bqspool-ops"] == "insert=1"


def test_an_object_keeps_8_kib_of_metadata_and_a_listing_shows_it(backend, tmp_path):
    path = tmp_path / "b.parquet"
    path.write_bytes(b"x" * 100)
    big = "k" * 8000  # GCS allows 8 KiB of custom metadata in all
    backend.store.upload(f"{backend.prefix}/meta8/b.parquet", path, {"bqspool-objects": big})
    (listed,) = backend.store.list_objects(f"{backend.prefix}/meta8/")
    assert listed.metadata["bqspool-objects"] == big


def test_a_move_copies_then_deletes_and_is_safe_to_repeat(backend, tmp_path):
    path = tmp_path / "m.bin"
    path.write_bytes(b"parquet" * 50)
    src, dst = f"{backend.prefix}/staged/m.parquet", f"{backend.prefix}/archive/m.parquet"
    backend.store.upload(src, path)
    assert backend.store.move_object(src, dst) is True
    assert backend.store.move_object(src, dst) is False  # a retry after a crash
    assert [o.name for o in backend.store.list_objects(f"{backend.prefix}/staged/")] == []
    out = tmp_path / "back.bin"
    backend.store.download(dst, out)
    assert out.read_bytes() == path.read_bytes()
    with pytest.raises(BackendError):
        backend.store.move_object(f"{backend.prefix}/none", f"{backend.prefix}/none2")


def test_many_moves_at_once_keep_each_moves_contract(backend):
    """150 pairs (more than one GCS batch request), one already moved, in order."""
    names = [f"{backend.prefix}/many/staged/{i:03d}.parquet" for i in range(150)]
    for i, n in enumerate(names):
        backend.store.write_object(n, f"object {i}".encode(), 0)
    moves = [(n, n.replace("/staged/", "/archive/")) for n in names]
    assert backend.store.move_object(*moves[120]) is True  # moved before, by a committer that then died
    assert backend.store.move_objects(moves) == [i != 120 for i in range(150)]
    assert backend.store.list_objects(f"{backend.prefix}/many/staged/") == []
    archived = backend.store.list_objects(f"{backend.prefix}/many/archive/")
    assert [o.name for o in archived] == [t for _, t in moves]
    assert backend.store.read_object(moves[77][1])[0] == b"object 77"
    assert backend.store.move_objects(moves[:3]) == [False, False, False]  # a repeat finds them moved
    assert backend.store.move_objects([]) == []
    with pytest.raises(BackendError):
        backend.store.move_objects([(f"{backend.prefix}/many/none", f"{backend.prefix}/many/none2")])


# -- load jobs ---------------------------------------------------------------------


def _load(backend, tmp_path, table, rows, job_id, name="f.parquet"):
    path = _staged(tmp_path, table, rows, name)
    obj = f"{backend.prefix}/{name}"
    backend.store.upload(obj, path)
    return backend.warehouse.start_load(job_id, table.name, [backend.store.uri(obj)])


def test_an_unknown_job_is_none_and_a_loaded_one_is_found(backend, tmp_path):
    table = _table(_fresh("jobs"), SIMPLE)
    backend.warehouse.ensure_table(table)
    job_id = f"bqspool_contract_{uuid.uuid4().hex}"
    assert backend.warehouse.get_job(job_id) is None  # looked up before every insert
    rows = [{"_event_id": str(i), "id": str(i), "n": i} for i in range(5)]
    outcome = _load(backend, tmp_path, table, rows, job_id)
    if not outcome.done:
        outcome = backend.warehouse.wait(job_id, timeout=120)
    assert outcome.done and outcome.error is None
    found = backend.warehouse.get_job(job_id)
    assert found is not None and found.done and found.error is None
    assert len(backend.warehouse.fetch_rows(table.name)) == 5


def test_starting_a_job_id_again_adopts_the_job(backend, tmp_path):
    table = _table(_fresh("dup"), SIMPLE)
    backend.warehouse.ensure_table(table)
    job_id = f"bqspool_contract_{uuid.uuid4().hex}"
    rows = [{"_event_id": str(i), "id": str(i), "n": i} for i in range(3)]
    first = _load(backend, tmp_path, table, rows, job_id)
    backend.warehouse.wait(job_id, timeout=120)
    again = backend.warehouse.start_load(job_id, table.name, [backend.store.uri(f"{backend.prefix}/f.parquet")])
    assert again.job_id == first.job_id
    assert len(backend.warehouse.fetch_rows(table.name)) == 3  # not loaded twice


def test_a_duplicate_job_id_is_refused_by_the_backend(backend, tmp_path):
    """BigQuery answers 409 to a second insert of a job id (the adapters rely on lookups, not on this)."""
    table = _table(_fresh("raw409"), SIMPLE)
    backend.warehouse.ensure_table(table)
    job_id = f"bqspool_contract_{uuid.uuid4().hex}"
    _load(backend, tmp_path, table, [{"_event_id": "1", "id": "1", "n": 1}], job_id)
    backend.warehouse.wait(job_id, timeout=120)
    uri = backend.store.uri(f"{backend.prefix}/f.parquet")
    if backend.kind == "fake":
        backend.warehouse.knobs.duplicate_ids = "adopt"
        backend.warehouse.start_load(job_id, table.name, [uri])
        assert backend.warehouse.inserts.count(job_id) == 1
        return
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET)
    with pytest.raises(gexc.Conflict):
        backend.raw.load_table_from_uri(
            [uri],
            backend.warehouse.table_ref(table.name),
            job_id=job_id,
            job_config=config,
            location=backend.warehouse.location,
        ).result()


def test_a_data_failure_is_told_from_a_transient_one(backend, tmp_path):
    table = _table(_fresh("bad"), SIMPLE)
    other = _table(
        "other",
        [
            {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
            {"name": "x", "type": "STRING"},
            {"name": "y", "type": "STRING"},
        ],
    )
    backend.warehouse.ensure_table(table)
    path = _staged(tmp_path, other, [{"_event_id": "1", "id": 1, "x": "a", "y": "b"}])
    name = f"{backend.prefix}/wrong.parquet"
    backend.store.upload(name, path)
    job_id = f"bqspool_contract_{uuid.uuid4().hex}"
    outcome = backend.warehouse.start_load(job_id, table.name, [backend.store.uri(name)])
    if not outcome.done:
        outcome = backend.warehouse.wait(job_id, timeout=120)
    assert outcome.error is not None and outcome.error.kind == "data" and not outcome.transient
    if backend.kind != "fake":
        return  # a real backend cannot be made to fail transiently on demand
    from bqspool.loader.interfaces import JobError

    backend.warehouse.knobs.job_errors = [JobError("backend", "backendError", "try later")]
    outcome = _load(backend, tmp_path, table, [{"_event_id": "1", "id": "1"}], f"j{uuid.uuid4().hex}", "t.parquet")
    assert outcome.transient


def test_a_rejected_job_of_several_objects_writes_nothing(backend, tmp_path):
    """A load job is atomic: an object rejected after others were read leaves no rows."""
    table = _table(_fresh("atomic"), SIMPLE)
    other = _table("other", [{"name": "id", "type": "INTEGER", "mode": "REQUIRED"}, {"name": "x", "type": "STRING"}])
    backend.warehouse.ensure_table(table)
    good = _staged(tmp_path, table, [{"_event_id": str(i), "id": str(i), "n": i} for i in range(3)], "a.parquet")
    bad = _staged(tmp_path, other, [{"_event_id": "9", "id": 9, "x": "no such field"}], "b.parquet")
    uris = []
    for name, path in ((f"{backend.prefix}/a-good.parquet", good), (f"{backend.prefix}/b-bad.parquet", bad)):
        backend.store.upload(name, path)  # the bad one sorts after the good one
        uris.append(backend.store.uri(name))
    job_id = f"bqspool_contract_{uuid.uuid4().hex}"
    outcome = backend.warehouse.start_load(job_id, table.name, uris)
    if not outcome.done:
        outcome = backend.warehouse.wait(job_id, timeout=120)
    assert outcome.error is not None and outcome.error.kind == "data"
    assert backend.warehouse.fetch_rows(table.name) == []


def test_parquet_columns_are_matched_by_name(backend, tmp_path):
    table = _table(_fresh("order"), SIMPLE)
    backend.warehouse.ensure_table(table)
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "swapped.parquet"
    pq.write_table(pa.table({"n": pa.array([7], pa.int64()), "id": ["x"], "_event_id": ["e"]}), path)
    name = f"{backend.prefix}/swapped.parquet"
    backend.store.upload(name, path)
    job_id = f"bqspool_contract_{uuid.uuid4().hex}"
    backend.warehouse.start_load(job_id, table.name, [backend.store.uri(name)])
    (row,) = backend.warehouse.fetch_rows(table.name)
    assert row["id"] == "x" and row["n"] == 7


def test_key_value_folders_add_no_columns(backend, tmp_path):
    table = _table(_fresh("hive"), SIMPLE)
    backend.warehouse.ensure_table(table)
    outcome = _load(
        backend,
        tmp_path,
        table,
        [{"_event_id": "e", "id": "x", "n": 1}],
        f"bqspool_contract_{uuid.uuid4().hex}",
        name="day=2026-11-29/f.parquet",
    )
    assert outcome.error is None, outcome.error


# -- types, tables and setup ---------------------------------------------------------

TYPES = {
    "INTEGER": (-(2**62), -(2**62)),
    "FLOAT": (2.5, 2.5),
    "NUMERIC": ("-1234.5", decimal.Decimal("-1234.5")),
    "BIGNUMERIC": ("1." + "1" * 38, decimal.Decimal("1." + "1" * 38)),
    "BOOLEAN": (True, True),
    "STRING": ("héllo ✓", "héllo ✓"),
    "BYTES": ("AP8=", b"\x00\xff"),
    "TIMESTAMP": (1_700_000_000_123_456, dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=dt.UTC)),
    "DATE": ("1999-12-31", dt.date(1999, 12, 31)),
    "TIME": (86_399_999_999, dt.time(23, 59, 59, 999999)),
    "DATETIME": ("2026-02-28T01:02:03.000004", dt.datetime(2026, 2, 28, 1, 2, 3, 4)),
    "JSON": ('{"a":[1,null]}', {"a": [1, None]}),
    "GEOGRAPHY": ("POINT(1 2)", "POINT(1 2)"),
}


@pytest.mark.parametrize("typ", sorted(TYPES))
def test_each_type_round_trips(backend, tmp_path, typ):
    stored, expected = TYPES[typ]
    table = _table(
        _fresh(typ.lower()), [{"name": "id", "type": "STRING", "mode": "REQUIRED"}, {"name": "v", "type": typ}]
    )
    backend.warehouse.ensure_table(table)
    job_id = f"bqspool_contract_{uuid.uuid4().hex}"
    outcome = _load(backend, tmp_path, table, [{"_event_id": "e", "id": "x", "v": stored}], job_id)
    if not outcome.done:
        outcome = backend.warehouse.wait(job_id, timeout=120)
    assert outcome.error is None, outcome.error
    (row,) = backend.warehouse.fetch_rows(table.name)
    got = row["v"]
    if typ == "JSON" and isinstance(got, str):
        got = json.loads(got)
    assert got == expected


def test_tables_are_created_as_the_schema_file_says(backend):
    table = _table(
        _fresh("opts"),
        [
            {"name": "ts", "type": "TIMESTAMP", "mode": "REQUIRED"},
            {"name": "user_id", "type": "STRING"},
            {"name": "kind", "type": "STRING"},
        ],
        time_partitioning={"field": "ts", "type": "DAY", "expiration_days": 90, "require_partition_filter": True},
        clustering=["user_id", "kind"],
        labels={"app": "bqspool", "team": "data"},
    )
    backend.warehouse.ensure_table(table)
    opts = backend.warehouse.table_options(table.name)
    part = dict(opts["partitioning"])
    part.pop("require_partition_filter")  # see test_require_partition_filter_is_kept
    assert part == {"type": "DAY", "field": "ts", "expiration_days": 90}
    assert opts["clustering"] == ["user_id", "kind"]
    assert opts["labels"] == {"app": "bqspool", "team": "data"}
    assert opts["columns"]["ts"]["type"] in ("TIMESTAMP",)


def test_require_partition_filter_is_kept(backend):
    table = _table(
        _fresh("rpf"),
        [{"name": "ts", "type": "TIMESTAMP", "mode": "REQUIRED"}],
        time_partitioning={"field": "ts", "type": "DAY", "require_partition_filter": True},
    )
    backend.warehouse.ensure_table(table)
    assert backend.warehouse.table_options(table.name)["partitioning"]["require_partition_filter"] is True


def test_setup_adds_a_nullable_column(backend):
    name = _fresh("grow")
    backend.warehouse.ensure_table(_table(name, SIMPLE))
    changes = backend.warehouse.ensure_table(_table(name, SIMPLE + [{"name": "extra", "type": "STRING"}]))
    assert changes == [f"added column {name}.extra"]
    assert "extra" in backend.warehouse.table_options(name)["columns"]
    assert backend.warehouse.ensure_table(_table(name, SIMPLE + [{"name": "extra", "type": "STRING"}])) == []


def test_the_warehouse_declares_its_limits(backend):
    limits = backend.warehouse.limits
    assert limits.jobs_per_table_day == 1500 and limits.jobs_per_table_10s == 5 and limits.uris_per_job == 10_000


# -- what the operator commands rely on ---------------------------------------------------


def _sql(backend):
    if backend.kind == "fake":
        pytest.skip("the in-memory warehouse runs no SQL (it says so: NotAvailableError)")


def test_a_copy_is_made_once_and_a_missing_source_is_an_error(backend):
    src, dst = f"{backend.prefix}/a", f"{backend.prefix}/b"
    backend.store.write_object(src, b"data", 0)
    assert backend.store.copy_object(src, dst) is True
    assert backend.store.copy_object(src, dst) is False
    assert backend.store.read_object(dst)[0] == b"data" and backend.store.read_object(src)[0] == b"data"
    with pytest.raises(BackendError):
        backend.store.copy_object(f"{backend.prefix}/missing", f"{backend.prefix}/c")


def test_a_missing_table_has_no_options_and_options_can_be_changed(backend):
    assert backend.warehouse.table_options(_fresh("none")) is None
    table = _table(
        _fresh("upd"),
        [{"name": "ts", "type": "TIMESTAMP", "mode": "REQUIRED"}, {"name": "u", "type": "STRING"}],
        time_partitioning={"field": "ts", "expiration_days": 90},
        labels={"app": "x"},
    )
    backend.warehouse.ensure_table(table)
    backend.warehouse.update_options(table.name, {"labels": {"app": "y"}, "expiration_days": 30, "clustering": ["u"]})
    opts = backend.warehouse.table_options(table.name)
    assert opts["labels"] == {"app": "y"} and opts["clustering"] == ["u"]
    assert opts["partitioning"]["expiration_days"] == 30


def test_queries_take_typed_parameters(backend):
    from bqspool.loader.interfaces import QueryParam

    _sql(backend)
    rows = backend.warehouse.query(
        "SELECT @s AS s, @n + 1 AS n, @d AS d, x FROM UNNEST(@xs) AS x ORDER BY x",
        [
            QueryParam("s", "STRING", "it's"),
            QueryParam("n", "INT64", 41),
            QueryParam("d", "DATE", dt.date(2026, 1, 2)),
            QueryParam("xs", "STRING", ["b", "a"]),
        ],
    )
    assert rows == [
        {"s": "it's", "n": 42, "d": dt.date(2026, 1, 2), "x": "a"},
        {"s": "it's", "n": 42, "d": dt.date(2026, 1, 2), "x": "b"},
    ]


def test_a_dry_run_says_what_a_query_scans(backend, tmp_path):
    _sql(backend)
    table = _table(_fresh("dry"), SIMPLE)
    backend.warehouse.ensure_table(table)
    outcome = _load(
        backend, tmp_path, table, [{"_event_id": "1", "id": "x" * 100, "n": 1}], f"bqspool_c_{uuid.uuid4().hex}"
    )
    assert backend.warehouse.wait(outcome.job_id, timeout=120).error is None
    assert (backend.warehouse.dry_run(f"SELECT id FROM `{table.name}`") or 0) > 0


def test_table_storage_is_reported(backend, tmp_path):
    table = _table(_fresh("size"), SIMPLE)
    backend.warehouse.ensure_table(table)
    outcome = _load(backend, tmp_path, table, [{"_event_id": "1", "id": "x", "n": 1}], f"bqspool_c_{uuid.uuid4().hex}")
    assert backend.warehouse.wait(outcome.job_id, timeout=120).error is None
    stored = backend.warehouse.table_storage(table.name)
    assert stored is not None and stored.rows == 1 and stored.total_bytes > 0


def test_query_history_is_kept(backend):
    _sql(backend)
    import time

    since = time.time() - 60
    backend.warehouse.query("SELECT 1 AS one")
    assert backend.warehouse.query_history(since)


def test_the_bucket_keeps_lifecycle_rules(backend):
    from bqspool.loader.interfaces import LifecycleRule

    rules = [LifecycleRule("set-storage-class", 30, f"{backend.prefix}/archive/", "COLDLINE")]
    if backend.kind == "gcp":
        pytest.skip("setting a real bucket's lifecycle would replace its owner's rules")
    assert backend.store.set_lifecycle(rules) == rules


def test_a_batch_answer_is_matched_to_its_call_by_content_id():
    from bqspool.loader.backends.gcs_batch import statuses

    def answer(parts: list[tuple[int, str | None]], boundary: str = "b0und") -> bytes:
        out = ""
        for status, content_id in parts:
            head = "Content-Type: application/http\r\n" + (f"Content-ID: {content_id}\r\n" if content_id else "")
            out += f"--{boundary}\r\n{head}\r\nHTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\n\r\n{{}}\r\n"
        return (out + f"--{boundary}--\r\n").encode()

    kind = 'multipart/mixed; boundary="b0und"'
    shuffled = answer([(404, "<response-2>"), (200, "<response-0>"), (412, "<response-1>")])
    assert statuses(kind, shuffled, 3) == [200, 412, 404]
    assert statuses(kind, answer([(204, None), (404, None)]), 2) == [204, 404]  # no ids: by position
    assert statuses("multipart/mixed; boundary=b0und", answer([(204, "<response-0>")]), 1) == [204]
    with pytest.raises(BackendError, match="3 calls came back with 2 answers"):
        statuses(kind, answer([(200, None), (200, None)]), 3)
    with pytest.raises(BackendError, match="without a multipart answer"):
        statuses("application/json", b"{}", 1)
    with pytest.raises(BackendError, match="without an HTTP status"):
        statuses(kind, b"--b0und\r\nContent-ID: <response-0>\r\n\r\ngarbage\r\n--b0und--", 1)


def test_a_batch_request_is_written_as_the_json_api_reads_it():
    from bqspool.loader.backends.gcs_batch import copy_call, delete_call, encode

    body = encode("http://h:1", [copy_call("bk", "a/x y~1.parquet", "arch/x"), delete_call("bk", "a/z")], "B")
    parts = body.split("--B")
    assert parts[-1] == "--\r\n" and len(parts) == 4
    assert "Content-ID: <0>" in parts[1] and "Content-ID: <1>" in parts[2]
    assert (
        "POST http://h:1/storage/v1/b/bk/o/a%2Fx%20y~1.parquet/copyTo/b/bk/o/arch%2Fx"
        "?ifGenerationMatch=0&prettyPrint=false HTTP/1.1" in parts[1]
    )
    assert "DELETE http://h:1/storage/v1/b/bk/o/a%2Fz?prettyPrint=false HTTP/1.1" in parts[2]


OPTIONS_KEY = "projects/p/locations/us/keyRings/bqspool/cryptoKeys/contract"
GCP_OPTIONS = ("BQSPOOL_TEST_GCP_KMS_KEY", "BQSPOOL_TEST_GCP_JOB_PROJECT")


def _options_config(backend):
    """A configuration with every production option, on the backend's project."""
    from bqspool.loader.config import load_config

    if backend.kind == "gcp":
        missing = [v for v in GCP_OPTIONS if not os.environ.get(v)]
        if missing:
            pytest.skip(f"CMEK and a job project are tested on a real project only with {', '.join(missing)} set")
        key, job_project = os.environ[GCP_OPTIONS[0]], os.environ[GCP_OPTIONS[1]]
    else:
        key, job_project = OPTIONS_KEY, None if backend.kind == "local" else "jobs-project"
    base = load_config(env={})
    if backend.kind == "fake":
        return replace(
            base,
            project="data-project",
            prefix=backend.prefix,
            kms_key=key,
            job_project=job_project,
            impersonate_service_account="loader@data-project.iam.gserviceaccount.com",
        )
    wh = backend.warehouse
    return replace(
        base,
        project=wh.project,
        dataset=wh.dataset,
        location=wh.location,
        bucket=backend.store.bucket_name,
        prefix=backend.prefix,
        kms_key=key,
        job_project=job_project,
        retry_deadline=10.0,
    )


def _one_of_each(store, warehouse, tmp_path, prefix):
    """An upload, a create-only write, a table and a load job: one call of each kind."""
    table = _table(_fresh("opts"), SIMPLE)
    warehouse.ensure_table(table)
    name = f"{prefix}/staged/{table.name}/2026-12-05/o.parquet"
    store.upload(name, _staged(tmp_path, table, [{"_event_id": "1", "id": "x", "n": 1}]))
    store.write_object(f"{prefix}/lease", b"{}", 0)
    outcome = warehouse.start_load(f"bqspool_c_{uuid.uuid4().hex}", table.name, [store.uri(name)])
    assert warehouse.wait(outcome.job_id, timeout=120).error is None
    return table, outcome.job_id


def test_every_call_carries_the_configured_options(backend, tmp_path, monkeypatch):
    """The key on every object, table and load job; the labels on every job; jobs in the job
    project. The fakes record what each call carried; on the local stack, what the servers
    were sent is read on the wire (the emulators keep no key, and run one project)."""
    from bqspool.loader.clients import configure, make_object_store, make_warehouse
    from bqspool.loader.labels import job_labels

    cfg = _options_config(backend)
    labels = {**job_labels("commit", cfg.prefix)}
    if backend.kind == "fake":
        configure(cfg, store=backend.store, warehouse=backend.warehouse)
        table, _ = _one_of_each(backend.store, backend.warehouse, tmp_path, backend.prefix)
        writes = backend.store.recorded
        assert {w["call"] for w in writes} == {"upload", "write"} and all(w["kms_key"] == cfg.kms_key for w in writes)
        assert all(w["principal"] == cfg.impersonate_service_account for w in writes)
        made, load = backend.warehouse.recorded[0], backend.warehouse.recorded[-1]
        assert made == {**made, "call": "create table", "table": table.name, "kms_key": cfg.kms_key}
        assert load["labels"] == {**labels, "bqspool_table": table.name} and load["kms_key"] == cfg.kms_key
        assert load["job_project"] == "jobs-project" and load["principal"] == cfg.impersonate_service_account
        return
    if backend.kind == "gcp":
        store, warehouse = make_object_store(cfg), make_warehouse(cfg)
        table, job_id = _one_of_each(store, warehouse, tmp_path, backend.prefix)
        job = warehouse.client.get_job(job_id, location=warehouse.location)
        assert job.project == cfg.job_project and job.labels == {**labels, "bqspool_table": table.name}
        assert job.destination_encryption_configuration.kms_key_name == cfg.kms_key
        assert (
            backend.raw.get_table(warehouse.table_ref(table.name)).encryption_configuration.kms_key_name == cfg.kms_key
        )
        blob = store.bucket.get_blob(f"{backend.prefix}/lease")
        assert blob.kms_key_name.startswith(cfg.kms_key)  # GCS names the key's version too
        return
    from .counting_proxy import CountingProxy

    gcs = CountingProxy(os.environ["STORAGE_EMULATOR_HOST"])
    bq = CountingProxy(os.environ["BIGQUERY_EMULATOR_HOST"])
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq.url)
        table, _ = _one_of_each(make_object_store(cfg), make_warehouse(cfg), tmp_path, backend.prefix)
    finally:
        gcs.close()
        bq.close()
    writes = [t for m, t, _ in gcs.seen if m == "POST" and t.startswith("/upload/")]
    assert len(writes) == 2 and all("kmsKeyName=" in t for t in writes), writes
    bodies = [(t.split("?")[0], json.loads(b)) for m, t, b in bq.seen if m == "POST" and b]
    made = [b for t, b in bodies if t.endswith("/tables")]
    assert [m["encryptionConfiguration"] for m in made] == [{"kmsKeyName": cfg.kms_key}]
    (load,) = [
        b["configuration"]["load"] | {"labels": b["configuration"]["labels"]}
        for t, b in bodies
        if t.endswith("/jobs") and "load" in b["configuration"]
    ]
    assert load["destinationEncryptionConfiguration"] == {"kmsKeyName": cfg.kms_key}
    assert load["labels"] == {**labels, "bqspool_table": table.name}


def test_a_tables_partitions_are_counted(backend, tmp_path):
    table = _table(
        _fresh("parts"),
        [*SIMPLE, {"name": "at", "type": "TIMESTAMP"}],
        time_partitioning={"field": "at", "type": "DAY"},
    )
    backend.warehouse.ensure_table(table)
    assert backend.warehouse.partition_count(table.name) in (None, 0)
    rows = [
        {
            "_event_id": str(d),
            "id": "x",
            "n": d,
            "at": int(dt.datetime(2026, 12, 1 + d % 3, tzinfo=dt.UTC).timestamp() * 1e6),
        }
        for d in range(6)
    ]
    outcome = _load(backend, tmp_path, table, rows, f"bqspool_c_{uuid.uuid4().hex}")
    assert backend.warehouse.wait(outcome.job_id, timeout=120).error is None
    assert backend.warehouse.partition_count(table.name) == 3
    assert backend.warehouse.partition_count(_fresh("missing")) is None
