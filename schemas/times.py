"""Converters of the time types: TIMESTAMP, DATE, TIME and DATETIME, in BigQuery's ranges."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from .converters import _EPOCH_RE, _MILLIS_THRESHOLD, MAX_NUMERIC_CHARS, _Bad, _is_numpy_bool, _numeric_string, _tname
from .display import show

UTC = dt.UTC


def _parse_iso_datetime(s: str, what: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(s.strip())
    except ValueError:
        raise _Bad(f"expected {what}, got unparseable {show(s)}") from None


_US = dt.timedelta(microseconds=1)
TS_MIN_US = -62135596800_000000  # 0001-01-01T00:00:00Z
TS_MAX_US = 253402300799_999999  # 9999-12-31T23:59:59.999999Z


def _epoch_us(v: int | float) -> int:
    if type(v) is float and not math.isfinite(v):
        raise _Bad(f"TIMESTAMP must be finite, got {v!r}")
    # Seconds or milliseconds, never more: past ±1e17 nothing is in range,
    # and an int of 400 digits must not reach the float arithmetic below.
    if not -1e17 < v < 1e17:
        raise _Bad(f"TIMESTAMP out of range: {show(v)}")
    us = round(v * 1000) if abs(v) >= _MILLIS_THRESHOLD else round(v * 1_000_000)
    if not TS_MIN_US <= us <= TS_MAX_US:
        raise _Bad(f"TIMESTAMP out of range: {show(v)}")
    return us


def _to_timestamp(v: Any) -> int:
    t = type(v)
    if t is int or t is float:
        return _epoch_us(v)
    if t is bool or _is_numpy_bool(v):
        raise _Bad(f"expected TIMESTAMP, got {_tname(v)}")
    if t is str:
        s = v.strip() if len(v) <= MAX_NUMERIC_CHARS else v
        if _EPOCH_RE.fullmatch(s):
            n = _numeric_string(s)
            return _epoch_us(float(n) if "." in n else int(n))
        d = _parse_iso_datetime(s, "TIMESTAMP")
    elif isinstance(v, dt.datetime):
        d = v
    elif isinstance(v, (int, float)):  # subclasses, numpy.float64
        return _epoch_us(float.__float__(v) if isinstance(v, float) else int.__index__(v))
    else:
        raise _Bad(f"expected TIMESTAMP, got {_tname(v)}")
    try:
        offset = d.utcoffset()
    except Exception as exc:  # a tzinfo of the caller's that raises or lies
        raise _Bad(f"the datetime's tzinfo failed: {_tname(exc)}") from exc
    # Naive means UTC: the rule BigQuery applies to zone-less timestamps.
    naive = dt.datetime(d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond)
    us = (naive - _EPOCH_NAIVE) // _US - (0 if offset is None else offset // _US)
    if not TS_MIN_US <= us <= TS_MAX_US:
        raise _Bad(f"TIMESTAMP out of range (years 1 to 9999 in UTC): {show(v)}")
    return us


_EPOCH_NAIVE = dt.datetime(1970, 1, 1)


def _to_date(v: Any) -> str:
    if isinstance(v, dt.datetime):
        raise _Bad("expected DATE, got datetime (pass .date() to drop the time)")
    if isinstance(v, dt.date):
        return dt.date(v.year, v.month, v.day).isoformat()
    if type(v) is str:
        try:
            return dt.date.fromisoformat(v.strip()).isoformat()
        except ValueError:
            raise _Bad(f"expected DATE, got unparseable {show(v)}") from None
    raise _Bad(f"expected DATE, got {_tname(v)}")


def _to_time(v: Any) -> int:
    if type(v) is str:
        try:
            v = dt.time.fromisoformat(v.strip())
        except ValueError:
            raise _Bad(f"expected TIME, got unparseable {show(v)}") from None
    if isinstance(v, dt.time):
        if v.tzinfo is not None:
            raise _Bad("TIME is zone-less, got a time with tzinfo")
        # Microseconds since midnight: Arrow casts int64 to time64 directly,
        # while it has no cast from a time string.
        return ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond
    raise _Bad(f"expected TIME, got {_tname(v)}")


def _to_datetime(v: Any) -> str:
    if type(v) is str:
        v = _parse_iso_datetime(v, "DATETIME")
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            raise _Bad("DATETIME is zone-less, got an aware datetime (use TIMESTAMP, or drop tzinfo)")
        # Python's datetime range (years 1 to 9999) is BigQuery's DATETIME range.
        return dt.datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond).isoformat(
            timespec="microseconds"
        )
    raise _Bad(f"expected DATETIME, got {_tname(v)}")
