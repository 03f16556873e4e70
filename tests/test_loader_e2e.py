"""End to end on the real local stack: buffer -> GCS Parquet -> BigQuery emulator."""

import base64
import datetime as dt
import decimal
import hashlib
import json
import random
from pathlib import Path

import pytest
from bqspool.buffer import Buffer
from bqspool.loader.ship.stage import Stager, read_batch_payloads
from bqspool.schemas import load_schema_set
from bqspool.schemas.coerce import Coercer

from .conftest import ALLTYPES
from .events import make_event
from .loader_support import Env, append_in_calls, assert_exactly_once

UTC = dt.UTC


@pytest.mark.parametrize("set_name", ["leafloaf", "eixa"])
def test_bundled_set_loads_end_to_end(stack, tmp_path, set_name):
    env = Env(tmp_path, set_name, batch_rows=150)
    rng = random.Random(set_name)
    appended = {}
    with Buffer(env.config.buffer, set_name, strict=True) as buf:
        for table in env.schemas.tables():
            events = [make_event(table, rng) for _ in range(rng.randrange(200, 400))]
            appended[table.name] = append_in_calls(buf, table.name, events, per_call=50)
    report = env.drainer().drain_once()
    assert report.events_loaded == sum(len(v) for v in appended.values())
    assert report.quarantined == [] and report.deferred == {}
    assert_exactly_once(env, appended)
    assert set(env.batch_states()) == {"shipped"}
    # The space of loaded rows goes back to the filesystem.
    db = Path(env.config.buffer)
    wal = db.with_name(db.name + "-wal")
    on_disk = db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    assert on_disk < 200 * 1024, on_disk
    again = env.drainer().drain_once()  # nothing left: a second drain is a no-op
    assert again.events_loaded == 0 and again.jobs_submitted == 0


def _without_bignumeric(tmp_path):
    # The emulator's DuckDB has no 76-digit decimal, so BIGNUMERIC cannot be
    # created there; test_bignumeric_survives_staging covers it up to Parquet.
    body = json.loads((ALLTYPES / "everything.json").read_text())
    body["fields"] = [f for f in body["fields"] if f["type"] != "BIGNUMERIC"]
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "everything.json").write_text(json.dumps(body))
    return folder


def test_every_type_round_trips_through_bigquery(stack, tmp_path):
    schemas = _without_bignumeric(tmp_path)
    env = Env(tmp_path, schemas)
    event = {
        "id": "full",
        "ts": dt.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC),
        "i": -(2**62),
        "f": 2.5,
        "n": decimal.Decimal("-12345678901234567890.123456789"),
        "b": False,
        "s": 'héllo ✓ "quoted"\nnewline',
        "short": "abc",
        "raw": b"\x00\xffbin",
        "d": dt.date(1999, 12, 31),
        "t": dt.time(23, 59, 58, 999999),
        "dt": dt.datetime(2026, 2, 28, 1, 2, 3, 4),
        "j": {"a": [1, 2.5, None, "x"], "b": {"c": True}},
        "g": "POINT(1 2)",
        "money": decimal.Decimal("-9999.99"),
        "tags": ["x", "", "z"],
        "rec": {"k": "key", "v": 7, "nested": {"on_day": dt.date(2020, 2, 29)}},
        "items": [
            {"sku": "a", "qty": 1, "prices": [decimal.Decimal("1.5"), decimal.Decimal("0.000000001")]},
            {"sku": "b", "prices": []},
        ],
    }
    sparse = {"id": "sparse"}
    with Buffer(env.config.buffer, schemas, strict=True) as buf:
        buf.append_many("everything", [event, sparse])
    assert env.drainer().drain_once().events_loaded == 2
    # The emulator's REST answer mangles BYTES and GEOGRAPHY cells, so read
    # them as base64 and WKT.
    rows = {
        r["id"]: r
        for r in env.query(
            "SELECT * EXCEPT (raw, g), TO_BASE64(raw) AS raw64, ST_ASTEXT(g) AS wkt FROM {ds}.everything"
        )
    }
    got = rows["full"]
    assert base64.b64decode(got["raw64"]) == event["raw"]
    assert got["wkt"].replace(" ", "") == event["g"].replace(" ", "")
    for key in ("ts", "i", "f", "n", "b", "s", "short", "d", "t", "dt", "money", "tags"):
        assert got[key] == event[key], key
    assert (json.loads(got["j"]) if isinstance(got["j"], str) else got["j"]) == event["j"]
    nested = {r["id"]: r for r in env.query("SELECT id, rec, items FROM {ds}.everything")}
    got, empty_nested = nested["full"], nested["sparse"]
    assert got["rec"] == event["rec"]
    assert got["items"] == [
        {"sku": "a", "qty": 1, "prices": event["items"][0]["prices"]},
        {"sku": "b", "qty": None, "prices": []},
    ]
    empty = rows["sparse"]
    assert empty["tags"] == [] and empty["ts"] is None and empty["n"] is None
    assert empty_nested["items"] == [] and empty_nested["rec"] is None


def test_staging_is_deterministic_and_chunk_independent(tmp_path, alltypes):
    table = alltypes["everything"]
    rng = random.Random(3)
    from .events import make_event as mk

    c = Coercer(table)
    payloads = [c.payload(mk(table, rng), f"id-{i}") for i in range(500)]
    stager = Stager(table)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    stager.write([payloads[:100], payloads[100:]], a)
    stager.write([payloads[i : i + 7] for i in range(0, 500, 7)], b)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    import pyarrow.parquet as pq

    schema = pq.read_schema(a)
    assert schema.names == [f.name for f in table.fields]  # table order: the emulator loads by position


def test_staging_parses_in_blocks_and_around_a_line_longer_than_a_block(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from bqspool.loader.ship import stage

    table = load_schema_set("eixa")["user_interactions"]
    c = Coercer(table)
    event = {"user_id": "u", "interaction_id": "i", "timestamp": 0, "intent": "chat"}
    small = [c.payload(dict(event, message_in=f"m{i}" * 40), f"id-{i}") for i in range(12_000)]  # ~2.4 MB
    big = c.payload(dict(event, message_in="é" * (3 * stage.PARSE_BLOCK // 2)), "id-big")  # 3 blocks
    assert sum(map(len, small)) > 2 * stage.PARSE_BLOCK and len(big.encode()) > 3 * stage.PARSE_BLOCK
    stager = Stager(table)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert stager.write(["\n".join(small)], a) == 12_000  # several blocks
    assert stager.write(["\n".join(small[:5000] + [big] + small[5000:])], b) == 12_001
    got = pq.read_table(b, columns=["_event_id", "message_in"]).to_pylist()
    assert [r["_event_id"] for r in got] == [f"id-{i}" for i in range(5000)] + ["id-big"] + [
        f"id-{i}" for i in range(5000, 12_000)
    ]
    assert got[5000]["message_in"] == "é" * (3 * stage.PARSE_BLOCK // 2)
    with_big = pq.read_table(b)
    assert pa.concat_tables([with_big.slice(0, 5000), with_big.slice(5001)]).equals(pq.read_table(a))


def test_read_batch_payloads_streams_in_chunks(tmp_path):
    import sqlite3

    # Stored rows of 7 events (append_many calls), then 4 single-event rows:
    # a step ends at the first row boundary at or past 10 events.
    with Buffer(tmp_path / "b.db", "eixa", durability="normal") as buf:
        for k in range(13):
            buf.append_many("tasks", [{"user_id": "u", "task_id": str(7 * k + i), "created_at": 0} for i in range(7)])
        for i in range(91, 95):
            buf.append("tasks", {"user_id": "u", "task_id": str(i), "created_at": 0})
    conn = sqlite3.connect(tmp_path / "b.db")
    chunks = [c.split("\n") for c in read_batch_payloads(conn, "tasks", 1, 17, chunk=10)]
    assert [len(c) for c in chunks] == [14] * 6 + [10, 1]
    assert [json.loads(line)["task_id"] for c in chunks for line in c] == [str(i) for i in range(95)]


def test_bignumeric_survives_staging(tmp_path, alltypes):
    import pyarrow.parquet as pq

    table = alltypes["everything"]
    value = decimal.Decimal("12345678901234567890123456789012345678.12345678901234567890123456789012345678")
    payload = Coercer(table).payload({"id": "x", "bn": value}, "e1")
    Stager(table).write([[payload]], tmp_path / "x.parquet")
    assert pq.read_table(tmp_path / "x.parquet").column("bn").to_pylist() == [value]
