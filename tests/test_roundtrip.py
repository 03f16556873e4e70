"""Property: any valid event is stored and reads back equal after coercion."""

import datetime as dt
import decimal
import json
import sqlite3

from bqspool.buffer import Buffer
from bqspool.schemas.decode import decoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import ALLTYPES
from .stored import stored_lines

UTC = dt.UTC
INT64 = st.integers(-(2**63), 2**63 - 1)
_lon = st.floats(min_value=-180, max_value=180, allow_nan=False)
_lat = st.floats(min_value=-90, max_value=90, allow_nan=False)
geographies = st.one_of(
    st.builds(lambda x, y: f"POINT({x!r} {y!r})", _lon, _lat),
    st.builds(lambda x, y: json.dumps({"type": "Point", "coordinates": [x, y]}), _lon, _lat),
    st.builds(
        lambda a, b: f"LINESTRING({a[0]!r} {a[1]!r}, {b[0]!r} {b[1]!r})", st.tuples(_lon, _lat), st.tuples(_lon, _lat)
    ),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
aware = st.datetimes(
    min_value=dt.datetime(1900, 1, 1),
    max_value=dt.datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(dt.timedelta(hours=-8))]
    ),
)
record = st.fixed_dictionaries(
    {"k": st.text()},
    optional={"v": INT64, "nested": st.fixed_dictionaries({}, optional={"on_day": st.dates()})},
)
item = st.fixed_dictionaries(
    {"sku": st.text(min_size=1)},
    optional={
        "qty": INT64,
        "prices": st.lists(st.decimals(places=9, min_value=-(10**28), max_value=10**28, allow_nan=False), max_size=3),
    },
)
event = st.fixed_dictionaries(
    {"id": st.text()},
    optional={
        "ts": aware | st.datetimes(min_value=dt.datetime(1900, 1, 1)),
        "i": INT64,
        "f": st.floats(allow_nan=False, allow_infinity=False),
        "n": st.decimals(places=9, min_value=-(10**28), max_value=10**28, allow_nan=False),
        "bn": st.decimals(places=38, min_value=-(10**37), max_value=10**37, allow_nan=False),
        "b": st.booleans(),
        "s": st.text(),
        "short": st.text(max_size=5),
        "raw": st.binary(),
        "d": st.dates(),
        "t": st.times(),
        "dt": st.datetimes(),
        "j": json_values,
        "g": geographies,
        "money": st.decimals(places=2, min_value=-9999, max_value=9999, allow_nan=False),
        "tags": st.lists(st.text(), max_size=4),
        "rec": record,
        "items": st.lists(item, max_size=3),
    },
)


def expected(fields, value):
    """What a value of these fields reads back as: missing NULLABLE None, REPEATED []."""
    out = {}
    for f in fields:
        v = value.get(f.name)
        if f.repeated:
            v = [expected(f.fields, x) if f.type == "RECORD" else x for x in (v or [])]
        elif v is None:
            v = None
        elif f.type == "RECORD":
            v = expected(f.fields, v)
        elif f.type == "TIMESTAMP":
            v = v if v.tzinfo else v.replace(tzinfo=UTC)
        elif f.type == "JSON":
            v = json.loads(json.dumps(v))
        out[f.name] = v
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ev=event)
def test_any_valid_event_round_trips(tmp_path, alltypes, ev):
    table = alltypes["everything"]
    path = tmp_path / "rt.db"
    with Buffer(path, ALLTYPES, strict=True, durability="normal", flush_interval=0) as buf:
        event_id = buf.append("everything", ev)
    (payload,) = [line for line in stored_lines(sqlite3.connect(path)) if event_id in line]
    back = decoder(table)(json.loads(payload))
    assert back.pop("_event_id") == event_id
    want = expected(table.user_fields, ev)
    assert back == want
    # Decimals compare by value; check they kept every digit too.
    if ev.get("n") is not None:
        assert decimal.Decimal(back["n"]) == ev["n"]
