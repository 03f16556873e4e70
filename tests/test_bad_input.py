"""A corpus of bad events: each gives a clear error (strict) or a dead-letter row
with its reason (default); never a crash, never a silent drop."""

import datetime as dt
import decimal
import math

import pytest
from bqspool.buffer import Buffer, UnknownStreamError, ValidationError

from .conftest import ALLTYPES


class Unserialisable:
    def __repr__(self):
        raise RuntimeError("no repr either")


def deep(n):
    value = "leaf"
    for _ in range(n):
        value = {"x": value}
    return value


circular = {}
circular["self"] = circular

E = "everything"
# (kind, stream, event, field path named in the error, words in the reason)
CORPUS = [
    ("not a dict", E, ["id", "x"], "", "expected an object"),
    ("None event", E, None, "", "expected an object"),
    ("string event", E, '{"id": "x"}', "", "expected an object"),
    ("missing REQUIRED", E, {"s": "x"}, "id", "REQUIRED field is missing"),
    ("null REQUIRED", E, {"id": None}, "id", "REQUIRED field is null"),
    ("missing REQUIRED in record", E, {"id": "x", "rec": {"v": 1}}, "rec.k", "REQUIRED field is missing"),
    (
        "missing REQUIRED in repeated record",
        E,
        {"id": "x", "items": [{"sku": "a"}, {"qty": 1}]},
        "items[1].sku",
        "REQUIRED",
    ),
    ("unknown field", E, {"id": "x", "colour": "red"}, "colour", "unknown field"),
    ("unknown nested field", E, {"id": "x", "rec": {"k": "a", "zz": 1}}, "rec.zz", "unknown field"),
    ("client-set _event_id", E, {"id": "x", "_event_id": "mine"}, "_event_id", "assigned by the buffer"),
    ("non-string key", E, {"id": "x", 5: "five"}, "", "field names must be strings"),
    ("bool as INTEGER", E, {"id": "x", "i": True}, "i", "got bool"),
    ("fractional INTEGER", E, {"id": "x", "i": 12.5}, "i", "non-integral"),
    ("INTEGER overflow", E, {"id": "x", "i": 2**63}, "i", "int64 range"),
    ("INTEGER underflow", E, {"id": "x", "i": -(2**63) - 1}, "i", "int64 range"),
    ("non-numeric INTEGER string", E, {"id": "x", "i": "twelve"}, "i", "expected INTEGER"),
    ("underscored INTEGER string", E, {"id": "x", "i": "1_000"}, "i", "not a number"),
    ("NaN INTEGER", E, {"id": "x", "i": math.nan}, "i", "expected INTEGER"),
    ("list as INTEGER", E, {"id": "x", "i": [1]}, "i", "got list"),
    ("NaN FLOAT", E, {"id": "x", "f": math.nan}, "f", "finite"),
    ("inf FLOAT", E, {"id": "x", "f": math.inf}, "f", "finite"),
    ("'-inf' FLOAT string", E, {"id": "x", "f": "-inf"}, "f", "finite"),
    ("huge int as FLOAT", E, {"id": "x", "f": 10**400}, "f", "expected FLOAT"),
    ("NUMERIC too precise", E, {"id": "x", "n": "1.0000000001"}, "n", "after the point"),
    ("NUMERIC too large", E, {"id": "x", "n": "1" + "0" * 29}, "n", "before the point"),
    ("NUMERIC NaN", E, {"id": "x", "n": decimal.Decimal("NaN")}, "n", "finite"),
    ("NUMERIC(6,2) overflow", E, {"id": "x", "money": "12345.6"}, "money", "before the point"),
    ("BOOLEAN from 2", E, {"id": "x", "b": 2}, "b", "expected BOOLEAN"),
    ("BOOLEAN from 'maybe'", E, {"id": "x", "b": "maybe"}, "b", "expected BOOLEAN"),
    ("lone surrogate", E, {"id": "x", "s": "bad \ud800 text"}, "s", "UTF-8"),
    ("surrogate in record", E, {"id": "x", "rec": {"k": "\udfff"}}, "rec.k", "UTF-8"),
    ("string over maxLength", E, {"id": "x", "short": "abcdef"}, "short", "maxLength"),
    ("dict as STRING", E, {"id": "x", "s": {"a": 1}}, "s", "expected STRING"),
    ("bool as STRING", E, {"id": "x", "s": False}, "s", "got bool"),
    ("bad base64 BYTES", E, {"id": "x", "raw": "not base64!"}, "raw", "base64"),
    ("unparseable timestamp", E, {"id": "x", "ts": "yesterday"}, "ts", "unparseable"),
    ("timestamp out of range", E, {"id": "x", "ts": 1e20}, "ts", "out of range"),
    ("timestamp epoch overflowing to inf", E, {"id": "x", "ts": 1.7e306}, "ts", "out of range"),
    ("NaN timestamp", E, {"id": "x", "ts": math.nan}, "ts", "finite"),
    ("date object as TIMESTAMP", E, {"id": "x", "ts": dt.date(2026, 1, 1)}, "ts", "expected TIMESTAMP"),
    ("month 13", E, {"id": "x", "d": "2026-13-01"}, "d", "unparseable"),
    ("February 30", E, {"id": "x", "d": "2026-02-30"}, "d", "unparseable"),
    ("datetime as DATE", E, {"id": "x", "d": dt.datetime(2026, 1, 1)}, "d", "got datetime"),
    ("hour 25", E, {"id": "x", "t": "25:00"}, "t", "unparseable"),
    ("aware TIME", E, {"id": "x", "t": dt.time(1, tzinfo=dt.UTC)}, "t", "zone-less"),
    ("aware DATETIME", E, {"id": "x", "dt": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}, "dt", "zone-less"),
    ("offset in DATETIME string", E, {"id": "x", "dt": "2026-01-01T00:00:00+02:00"}, "dt", "zone-less"),
    ("unserialisable JSON value", E, {"id": "x", "j": {"a": {1, 2}}}, "j", "not serialisable"),
    ("NaN inside JSON", E, {"id": "x", "j": {"a": math.nan}}, "j", "invalid"),
    ("circular JSON value", E, {"id": "x", "j": circular}, "j", "circular"),
    ("deeply nested JSON", E, {"id": "x", "j": deep(100_000)}, "j", "nested too deeply"),
    (
        "deep nesting beyond the schema",
        E,
        {"id": "x", "rec": {"k": "a", "nested": {"on_day": deep(3)}}},
        "rec.nested.on_day",
        "expected DATE",
    ),
    ("empty GEOGRAPHY", E, {"id": "x", "g": " "}, "g", "GEOGRAPHY"),
    ("scalar for REPEATED", E, {"id": "x", "tags": "a,b"}, "tags", "expected a list"),
    ("null inside REPEATED", E, {"id": "x", "tags": ["a", None]}, "tags[1]", "cannot contain null"),
    (
        "wrong type inside REPEATED",
        E,
        {"id": "x", "items": [{"sku": "a", "prices": ["1", "x"]}]},
        "items[0].prices[1]",
        "expected NUMERIC",
    ),
    ("scalar for RECORD", E, {"id": "x", "rec": "k=a"}, "rec", "expected an object"),
    ("object of unknown class", E, {"id": "x", "s": Unserialisable()}, "s", "expected STRING"),
    ("huge row", E, {"id": "x", "s": "x" * (11 * 1024 * 1024)}, "", "exceeds"),
    ("unknown stream", "no_such_table", {"id": "x"}, "", "unknown stream"),
    ("non-string stream", 42, {"id": "x"}, "", "unknown stream"),
]


def test_corpus_is_big_enough():
    assert len({kind for kind, *_ in CORPUS}) >= 40


@pytest.mark.parametrize("kind,stream,event,path,reason", CORPUS, ids=[c[0] for c in CORPUS])
def test_strict_raises_clear_error(tmp_path, kind, stream, event, path, reason):
    with Buffer(tmp_path / "b.db", ALLTYPES, strict=True, durability="normal") as buf:
        with pytest.raises(ValidationError) as err:
            buf.append(stream, event)
        assert err.value.path == path
        assert reason in err.value.reason
        if path:
            assert repr(path) in str(err.value)
        if reason == "unknown stream":
            assert isinstance(err.value, UnknownStreamError)
        assert buf.stats()["pending"] == 0 and buf.stats()["dead_letters"] == 0


def test_default_mode_dead_letters_every_kind(tmp_path):
    with Buffer(tmp_path / "b.db", ALLTYPES, durability="normal") as buf:
        ids = [buf.append(stream, event) for _, stream, event, _, _ in CORPUS]
        ids += buf.append_many(E, [{"id": "ok"}, {"id": None}, {"id": "ok2", "i": "x"}])
        stats = buf.stats()
        rows = {r["event_id"]: r for r in buf.dead_letters(limit=1000)}
    assert all(ids) and len(set(ids)) == len(ids)
    assert stats["dead_letters"] == len(CORPUS) + 2
    assert stats["streams"][E]["pending"] == 1
    for (kind, stream, _event, _path, reason), event_id in zip(CORPUS, ids):
        row = rows[event_id]
        assert reason in row["reason"], kind
        assert row["stream"] == str(stream)
        assert row["payload"]  # raw event kept as far as it can be represented
    # The payload of a row that fits is kept verbatim as JSON.
    assert rows[ids[3]]["payload"] == '{"s": "x"}'
    assert len(rows[ids[[c[0] for c in CORPUS].index("huge row")]]["payload"]) < 1_100_000


def test_append_many_strict_stores_nothing_when_one_is_bad(tmp_path):
    with Buffer(tmp_path / "b.db", ALLTYPES, strict=True, durability="normal") as buf:
        with pytest.raises(ValidationError, match="'i'"):
            buf.append_many(E, [{"id": "a"}, {"id": "b", "i": "no"}])
        assert buf.stats()["pending"] == 0
