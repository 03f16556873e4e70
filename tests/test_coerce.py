"""Coercion of valid input: each BigQuery type's accepted forms and stored form."""

import datetime as dt
import decimal
import json
import uuid

import pytest
from bqspool.schemas import ValidationError
from bqspool.schemas.coerce import Coercer
from bqspool.schemas.decode import decoder

UTC = dt.UTC
T0_US = 1_763_978_400_000_000  # 2025-11-24T10:00:00Z


@pytest.fixture(scope="module")
def coerce(alltypes):
    c = Coercer(alltypes["everything"])
    return lambda **kw: c.coerce({"id": "x", **kw})


@pytest.mark.parametrize(
    "value,expected",
    [
        (12, 12),
        (12.0, 12),
        ("12", 12),
        (" -7 ", -7),
        ("12.0", 12),
        (decimal.Decimal("3"), 3),
        (2**63 - 1, 2**63 - 1),
        (-(2**63), -(2**63)),
    ],
)
def test_integer(coerce, value, expected):
    out = coerce(i=value)["i"]
    assert out == expected and type(out) is int


@pytest.mark.parametrize("value,expected", [(1, 1.0), (1.5, 1.5), ("2.5e3", 2500.0), (decimal.Decimal("0.25"), 0.25)])
def test_float(coerce, value, expected):
    assert coerce(f=value)["f"] == expected


@pytest.mark.parametrize(
    "value,expected",
    [
        (decimal.Decimal("12.50"), "12.5"),
        (3, "3"),
        (0.1, "0.1"),
        ("-0.000000001", "-0.000000001"),
        ("1E+2", "100"),
        ("9" * 29 + "." + "9" * 9, "9" * 29 + "." + "9" * 9),
    ],
)
def test_numeric(coerce, value, expected):
    assert coerce(n=value)["n"] == expected


def test_bignumeric_and_parameterised_numeric(coerce):
    assert coerce(bn="1" * 38 + "." + "1" * 38)["bn"] == "1" * 38 + "." + "1" * 38
    assert coerce(money="1234.5")["money"] == "1234.5"


@pytest.mark.parametrize(
    "value,expected",
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        ("true", True),
        ("FALSE", False),
        ("yes", True),
        ("0", False),
    ],
)
def test_bool(coerce, value, expected):
    assert coerce(b=value)["b"] is expected


def test_string_like(coerce):
    u = uuid.UUID(int=5)
    assert coerce(s="héllo ✓")["s"] == "héllo ✓"
    assert coerce(s=42)["s"] == "42"
    assert coerce(s=u)["s"] == str(u)
    assert coerce(short="abcde")["short"] == "abcde"
    assert coerce(g="POINT(1 2)")["g"] == "POINT(1 2)"


def test_bytes(coerce):
    assert coerce(raw=b"\x00\xff")["raw"] == "AP8="
    assert coerce(raw=bytearray(b"ab"))["raw"] == "YWI="
    assert coerce(raw="AP8=")["raw"] == "AP8="


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2025, 11, 24, 10, tzinfo=UTC),
        dt.datetime(2025, 11, 24, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.datetime(2025, 11, 24, 10),  # naive: UTC
        "2025-11-24T10:00:00Z",
        "2025-11-24 10:00:00",
        "2025-11-24T05:00:00-05:00",
        "2025-11-24T10:00:00.000000+00:00",
        1_763_978_400,
        1_763_978_400.0,
        1_763_978_400_000,
        "1763978400",
    ],
)
def test_timestamp_forms(coerce, value):
    assert coerce(ts=value)["ts"] == T0_US


def test_timestamp_precision_and_millis(coerce):
    assert coerce(ts=1_763_978_400.123456)["ts"] == T0_US + 123456
    assert coerce(ts=1_763_978_400_123)["ts"] == T0_US + 123000
    assert coerce(ts="2025-11-24T10:00:00.5Z")["ts"] == T0_US + 500000


def test_date_time_datetime(coerce):
    out = coerce(d=dt.date(2026, 2, 28), t=dt.time(7, 5), dt=dt.datetime(2026, 1, 2, 3, 4, 5, 6))
    assert (out["d"], out["t"], out["dt"]) == ("2026-02-28", 25_500_000_000, "2026-01-02T03:04:05.000006")
    out = coerce(d="2026-02-28", t="07:05:01.25", dt="2026-01-02 03:04:05")
    assert (out["d"], out["t"], out["dt"]) == ("2026-02-28", 25_501_250_000, "2026-01-02T03:04:05.000000")


def test_json_column(coerce):
    assert json.loads(coerce(j={"a": [1, 2, {"b": None}]})["j"]) == {"a": [1, 2, {"b": None}]}
    assert coerce(j="text")["j"] == '"text"'
    assert coerce(j=3)["j"] == "3"


def test_record_and_repeated(coerce):
    out = coerce(
        tags=("a", "b"),
        rec={"k": "key", "v": "5", "nested": {"on_day": "2026-01-01"}},
        items=[{"sku": "s1", "qty": 2.0, "prices": ["1.50", 2]}, {"sku": "s2"}],
    )
    assert out["tags"] == ["a", "b"]
    assert out["rec"] == {"k": "key", "v": 5, "nested": {"on_day": "2026-01-01"}}
    assert out["items"] == [{"sku": "s1", "qty": 2, "prices": ["1.5", "2"]}, {"sku": "s2"}]


def test_nulls_and_missing_are_omitted_and_none_repeated_is_empty(coerce):
    assert coerce(i=None, tags=None) == {"id": "x"}


def test_unknown_fields_policy(alltypes):
    table = alltypes["everything"]
    with pytest.raises(ValidationError, match="unknown field"):
        Coercer(table).coerce({"id": "x", "extra": 1})
    assert Coercer(table, unknown_fields="ignore").coerce({"id": "x", "extra": 1, "rec": {"k": "a", "zz": 2}}) == {
        "id": "x",
        "rec": {"k": "a"},
    }


def test_payload_is_table_ordered_json_with_event_id_first(alltypes):
    c = Coercer(alltypes["everything"])
    text = c.payload({"s": "b", "id": "a", "i": 1}, "EID")
    assert text == '{"_event_id":"EID","id":"a","i":1,"s":"b"}'


def test_decode_inverts_stored_form(alltypes):
    c = Coercer(alltypes["everything"])
    event = {
        "id": "a",
        "ts": dt.datetime(2026, 1, 1, 12, 30, 15, 123456, tzinfo=UTC),
        "i": 5,
        "f": 1.25,
        "n": decimal.Decimal("1.5"),
        "b": True,
        "raw": b"\x01",
        "d": dt.date(2026, 1, 1),
        "t": dt.time(1, 2, 3, 4),
        "dt": dt.datetime(2026, 1, 1, 1),
        "j": {"x": [1]},
        "items": [{"sku": "s", "qty": None, "prices": [decimal.Decimal("2")]}],
    }
    back = decoder(alltypes["everything"])(json.loads(c.payload(event, "E")))
    for key, value in event.items():
        assert back[key] == value, key
    assert back["_event_id"] == "E" and back["s"] is None and back["tags"] == []
