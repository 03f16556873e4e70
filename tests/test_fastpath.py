"""The compiled fast path agrees with the full coercion, byte for byte, or steps aside."""

import datetime as dt
import decimal
import enum
import uuid

import msgspec
import pytest
from bqspool.schemas import load_schema_set
from bqspool.schemas.coerce import Coercer
from bqspool.schemas.converters import _json_chunks
from bqspool.schemas.errors import ValidationError
from bqspool.schemas.fastpath import _flat_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .test_roundtrip import event as valid_everything


class Level(enum.IntEnum):
    HIGH = 3


class Text(str):
    pass


# Values of every shape an app might pass, canonical or not: the fast path
# must either produce exactly the full path's bytes or return None.
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**64), 2**64),
    st.floats(),
    st.floats(-1e12, 1e12),
    st.floats(-7e10, -6e10),
    st.sampled_from(
        [
            -62135596800,
            -62135596801,
            -62135596800.0,
            -62135596800.5,
            99_999_999_999,
            100_000_000_000,
            99_999_999_999.99,
            1e11,
            253402300799,
            1.7e308,
            float("inf"),
            float("nan"),
            Level.HIGH,
            Text("x"),
            "12",
            "1.5",
            " 7 ",
            "true",
            "\ud800",
            "é",
            "",
            decimal.Decimal("1.5"),
            uuid.UUID(int=5),
            b"ab",
            dt.date(2026, 1, 2),
            dt.datetime(2026, 1, 2, 3, 4, 5),
            dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
            dt.time(1, 2, 3),
            {"k": "v"},
            {"k": float("nan")},
            [1, "a"],
            ["a", None],
            {1: 2},
            {"a": {1, 2}},
        ]
    ),
    st.text(max_size=8),
)
KEYS = [
    "id",
    "ts",
    "i",
    "f",
    "n",
    "b",
    "s",
    "short",
    "raw",
    "d",
    "t",
    "dt",
    "j",
    "g",
    "tags",
    "rec",
    "items",
    "_event_id",
    "unknown",
]
SEARCH_KEYS = [
    "user_id",
    "session_id",
    "timestamp",
    "query",
    "intent",
    "result_count",
    "search_latency_ms",
    "store_id",
    "page",
    "filters",
    "_event_id",
    "extra",
]


@pytest.fixture(scope="module")
def everything(alltypes):
    return Coercer(alltypes["everything"]), Coercer(alltypes["everything"], unknown_fields="ignore")


@pytest.fixture(scope="module")
def search():
    return Coercer(load_schema_set("leafloaf")["user_search_events"])


def agree(c: Coercer, event) -> bytes | None:
    """Assert the two paths agree on ``event``; the fast path's result."""
    fast = c.fast(event, "E1")
    try:
        full = c.encode_full(event, "E1")
    except ValidationError:
        assert fast is None, f"fast path accepted what the full path rejects: {event!r}"
        return None
    assert fast is None or fast == full, f"{event!r}:\n{fast!r}\n!=\n{full!r}"
    return fast


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), anything, max_size=8))
def test_any_event_gets_the_same_bytes_or_the_full_path(everything, event):
    for c in everything:
        agree(c, dict(event, id=event.get("id", "x")))
        agree(c, event)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(SEARCH_KEYS), anything, max_size=12))
def test_required_columns_and_inlined_conversions_agree(search, event):
    agree(search, event)
    agree(search, dict(event, user_id="u", query="q", timestamp=event.get("timestamp", 1.5e9)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_everything)
def test_valid_events_agree(everything, event):
    agree(everything[0], event)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(valid_everything, st.dictionaries(st.sampled_from(KEYS), anything, max_size=6)), max_size=6))
def test_a_list_gets_the_joined_rows_or_steps_aside_whole(everything, events):
    for c in everything:
        ids = [f"E{i}" for i in range(len(events))]
        one = [c.fast(e, i) for e, i in zip(events, ids)]
        lines = c.fast_lines(events, ids)
        if None in one:
            assert lines is None
        else:
            assert lines == b"".join(row + b"\n" for row in one)


flat_values = st.one_of(
    st.text(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.sampled_from(['\x00\x1f\x7f"\\/', "\u2028\u2029", "é€😀", "\ud800"]),
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(), flat_values, max_size=6))
def test_flat_json_objects_get_the_standard_encoders_text(obj):
    # The JSON column's msgspec shortcut writes what _to_json writes, or raises (a surrogate).
    try:
        text = _flat_json(obj)
    except (msgspec.EncodeError, UnicodeEncodeError):
        text = None
    try:
        full = "".join(_json_chunks(obj, 0))
        full.encode("utf-8")
    except UnicodeEncodeError:
        assert text is None
        return
    assert text == full


def test_flat_json_leaves_floats_and_nesting_to_the_standard_encoder():
    for obj in ({"a": 1.5}, {"a": {"b": 1}}, {"a": [1]}, {1: "a"}, {"a": Level.HIGH}, {"a": Text("x")}, [1], "s"):
        assert _flat_json(obj) is None


def test_canonical_events_take_the_fast_path(search, everything):
    event = {
        "user_id": "u-1",
        "session_id": "s",
        "timestamp": 1_795_000_000.25,
        "query": "oat milk",
        "result_count": 3,
        "search_latency_ms": 41,
        "page": 1,
        "filters": {"vegan": True, "max": 9.5},
    }
    assert agree(search, event) is not None
    assert agree(search, dict(event, timestamp=1_795_000_000_123)) is not None  # epoch milliseconds
    assert agree(search, dict(event, timestamp="2026-11-24T10:00:00+01:00")) is not None  # by its converter
    assert agree(search, dict(event, filters=None, session_id=None)) is not None
    assert agree(search, dict(event, query="crème brûlée")) is not None
    many = [event, dict(event, query="crème brûlée"), dict(event, filters=None)]
    assert search.fast_lines(many, ["a", "b", "c"]) == b"".join(search.fast(e, i) + b"\n" for e, i in zip(many, "abc"))
    rich = {
        "id": "x",
        "ts": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "n": decimal.Decimal("1.25"),
        "d": dt.date(2026, 1, 1),
        "tags": ["a"],
        "rec": {"k": "v"},
        "items": [{"sku": "s", "qty": 2}],
    }
    assert agree(everything[0], rich) is not None  # columns the fast path hands to their converters


@pytest.mark.parametrize(
    "change",
    [
        {"result_count": "3"},  # converted by the full path
        {"result_count": 3.0},
        {"page": True},
        {"query": Text("q")},
        {"query": "\ud800"},  # the full path names the field
        {"query": None},
        {"timestamp": -62135596801},
        {"filters": {"x": float("nan")}},
        {"_event_id": "mine"},
        {"extra": 1},
    ],
)
def test_what_needs_conversion_or_an_error_is_left_to_the_full_path(search, change):
    event = dict({"user_id": "u", "timestamp": 1.7e9, "query": "q"}, **change)
    assert search.fast(event, "E1") is None
    agree(search, event)


@pytest.mark.parametrize(
    "column,value",
    [
        ("f", float("nan")),
        ("f", float("inf")),
        ("f", -float("inf")),
        ("f", "1.5"),
        ("f", True),
        ("i", 2**63),
        ("i", -(2**63) - 1),
        ("i", True),
        ("i", 12.0),
        ("short", "toolong"),
        ("short", 5),
        ("b", 1),
        ("b", "yes"),
        ("s", Text("x")),
        ("s", "\udfff"),
    ],
)
def test_plain_columns_step_aside_at_their_bounds(everything, column, value):
    c = everything[0]
    assert c.fast({"id": "x", column: value}, "E1") is None
    agree(c, {"id": "x", column: value})
