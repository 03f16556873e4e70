"""Validate and coerce events against a table, on the append hot path.

A table compiles once into a tree of small closures; coercing an event walks
that tree with no per-call lookups of types or modes. The result is the
*stored form*: a compact JSON object, ``_event_id`` first and the other
columns in table order, whose values are what Arrow's JSON reader and
BigQuery both read without further work:

=============  ====================================================  =============================
BigQuery type  accepted from Python                                  stored as
=============  ====================================================  =============================
INTEGER        int; integral float (12.0); numeric string ("12",      int (int64 range)
               "12.0"); integral Decimal
FLOAT          int, float, numeric string, Decimal (finite only)     float
NUMERIC        Decimal, int, float (via its repr), numeric string;   string, e.g. "12.50" -> "12.5"
BIGNUMERIC     precision/scale checked (38/9, 76/38 or declared)
BOOLEAN        bool; 0/1; "true"/"false"/"t"/"f"/"yes"/"no"/"1"/"0"   bool
STRING         str (valid UTF-8, ``maxLength`` checked); int,        str
               Decimal and UUID via str()
BYTES          bytes, bytearray, memoryview; base64 str              base64 str
TIMESTAMP      aware datetime; naive datetime (taken as UTC);        int: microseconds since the
               ISO-8601 string (no offset: UTC); epoch seconds       Unix epoch (UTC)
               (int, float or numeric string), or epoch
               milliseconds when abs(value) >= 1e11
DATE           date (not datetime); "YYYY-MM-DD"                     "YYYY-MM-DD"
TIME           naive time; "HH:MM[:SS[.ffffff]]"                     int: microseconds since midnight
DATETIME       naive datetime; ISO string without offset             "YYYY-MM-DDTHH:MM:SS.ffffff"
JSON           any JSON-serialisable value (a str is a JSON string)  str holding compact JSON
GEOGRAPHY      WKT or GeoJSON string, shape checked (geography.py)   str
RECORD         dict (any Mapping)                                    object
REPEATED       list or tuple; None means empty; no null elements    array
=============  ====================================================  =============================

Rules worth knowing: ``bool`` is never a number; NaN and infinities are
rejected everywhere (JSON cannot carry them and analytics rarely want them);
a naive datetime in a TIMESTAMP is UTC, the same rule BigQuery applies to a
zone-less timestamp string; an aware datetime in a DATETIME is an error
rather than a silent conversion. Unknown fields are an error by default
(``unknown_fields="ignore"`` drops them instead). Every failure raises
:class:`~bqspool.schemas.errors.ValidationError` naming the field path
(``products[2].price``) and the reason.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import json
import json.encoder
import math
import numbers
import operator
import re
import threading
import uuid
from collections.abc import Mapping
from typing import Any, Callable

import msgspec

from .definition import EVENT_ID, Field, TableDef
from .display import safe_text, show, type_name
from .geography import geography_problem
from .fastpath import compile_fast
from .errors import ConfigError, ValidationError

UTC = dt.timezone.utc
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MILLIS_THRESHOLD = 1e11  # epoch values at or above this are milliseconds
_DEC = decimal.Context(prec=200, traps=[decimal.InvalidOperation])
_TRUE = frozenset(("true", "t", "yes", "y", "1"))
_FALSE = frozenset(("false", "f", "no", "n", "0"))
_MISSING = object()
_EPOCH_RE = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")
UNKNOWN_POLICIES = ("error", "ignore")
DEFAULT_MAX_ROW_BYTES = 10 * 1024 * 1024


def _no_default(o: Any) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
# The stored row is built here from already-coerced values (str, int,
# finite float, bool, list, dict), so a fast encoder that knows nothing of
# NaN or cycles is safe for it: msgspec encodes it about four times faster
# than the standard library, and this runs once per appended event. Each
# thread gets its own Encoder; they hold a reusable output buffer.
_local = threading.local()


def _encoder() -> msgspec.json.Encoder:
    try:
        return _local.encoder
    except AttributeError:
        _local.encoder = msgspec.json.Encoder()
        return _local.encoder


# JSON columns hold whatever the app passes, so they keep the standard
# library's checks (NaN and infinities are errors, not silently null). Its
# C encoder called directly skips json.dumps()'s per-call set-up; without a
# cycle check a circular value raises RecursionError, reported as an error.
_c_encoder = json.encoder.c_make_encoder  # type: ignore[attr-defined]
if _c_encoder is not None:
    _json_chunks = _c_encoder(None, _no_default, json.encoder.encode_basestring, None, ":", ",", False, False, False)

    def _encode_json(value: Any) -> str:
        return "".join(_json_chunks(value, 0))

else:  # pragma: no cover - CPython always has the C accelerator
    _encode_json = _encode


class _Bad(Exception):
    """Internal, cheap failure signal; ``path`` grows as it unwinds."""

    def __init__(self, reason: str, path: list | None = None):
        self.reason = reason
        self.path = path if path is not None else []


def _tname(v: Any) -> str:
    return type_name(v)


def _check_utf8(s: str) -> str:
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad("string is not valid UTF-8 (lone surrogate)") from None
    return s


# A numeric string longer than this is refused before any parsing: the
# longest legitimate one (a BIGNUMERIC with 76 digits, its sign, point and
# an exponent) is far shorter, and parsing costs time that grows with the
# length the caller chose.
MAX_NUMERIC_CHARS = 200


def _numeric_string(s: str) -> str:
    if len(s) > MAX_NUMERIC_CHARS * 4:  # before strip(): bounded work on any input
        raise _Bad(f"numeric string of {len(s)} characters is too long")
    s = s.strip()
    # Python's int()/float() accept "1_000" and "nan"; BigQuery does not.
    if not s or "_" in s:
        raise _Bad(f"not a number: {show(s)}")
    if len(s) > MAX_NUMERIC_CHARS:
        raise _Bad(f"numeric string of {len(s)} characters is too long")
    return s


def _decimal(v: Any, what: str) -> decimal.Decimal:
    """A finite Decimal from a str, Decimal or exact int; _Bad otherwise."""
    try:
        if type(v) is str:
            d = decimal.Decimal(_numeric_string(v))
        elif isinstance(v, decimal.Decimal):
            d = v
        elif isinstance(v, int):
            i = int.__index__(v)  # the exact value, whatever a subclass overrides
            if i.bit_length() > 4 * MAX_NUMERIC_CHARS:  # int -> Decimal is slow for huge ints
                raise _Bad(f"{what} out of range: {show(i)}")
            d = decimal.Decimal(i)
        elif hasattr(type(v), "__index__"):  # numpy integers
            d = decimal.Decimal(operator.index(v))
        else:
            raise _Bad(f"expected {what}, got {_tname(v)}")
    except decimal.InvalidOperation:
        raise _Bad(f"expected {what}, got {show(v)}") from None
    if not d.is_finite():
        raise _Bad(f"{what} must be finite, got {show(v)}")
    return d


def _to_int(v: Any) -> int:
    t = type(v)
    if t is int:
        out = v
    elif t is bool or _is_numpy_bool(v):
        raise _Bad(f"expected INTEGER, got {_tname(v)}")
    elif isinstance(v, float):
        v = float.__float__(v)  # a float subclass (numpy.float64): its exact value
        if not math.isfinite(v):
            raise _Bad(f"expected INTEGER, got {v!r}")
        if not v.is_integer():
            raise _Bad(f"expected INTEGER, got non-integral {v!r}")
        out = int(v)
    elif isinstance(v, int):  # IntEnum and friends
        out = int.__index__(v)
    elif t is str or isinstance(v, decimal.Decimal):
        d = _decimal(v, "INTEGER")
        # adjusted() is the exponent of the leading digit: checking it first
        # keeps int() from expanding "1e999999999" into a billion digits.
        if not d.is_zero() and d.adjusted() > 18:
            raise _Bad(f"INTEGER out of int64 range: {show(v)}")
        if d != d.to_integral_value():
            raise _Bad(f"expected INTEGER, got non-integral {show(v)}")
        out = int(d)
    elif hasattr(t, "__index__"):  # numpy integers: exact by definition
        out = operator.index(v)
    else:
        raise _Bad(f"expected INTEGER, got {_tname(v)}")
    if not _INT64_MIN <= out <= _INT64_MAX:
        raise _Bad(f"INTEGER out of int64 range: {show(out)}")
    return out


def _to_float(v: Any) -> float:
    t = type(v)
    if t is bool or _is_numpy_bool(v):
        raise _Bad(f"expected FLOAT, got {_tname(v)}")
    try:
        if t is float:
            out = v
        elif isinstance(v, float):
            out = float.__float__(v)
        elif isinstance(v, int):
            out = float(int.__index__(v))
        elif t is str:
            out = float(_numeric_string(v))
        elif isinstance(v, (decimal.Decimal, numbers.Real)):  # numpy floats and ints too
            out = float(v)
        else:
            raise _Bad(f"expected FLOAT, got {_tname(v)}")
    except (ValueError, OverflowError):
        raise _Bad(f"expected FLOAT, got {show(v)}") from None
    if type(out) is not float:
        raise _Bad(f"expected FLOAT, got {_tname(v)}")
    if not math.isfinite(out):
        raise _Bad(f"FLOAT must be finite, got {show(v)}")
    return out


def _make_numeric(f: Field) -> Callable[[Any], str]:
    big = f.type == "BIGNUMERIC"
    max_scale = f.scale if f.precision is not None else (38 if big else 9)
    max_int = (f.precision - (f.scale or 0)) if f.precision is not None else (38 if big else 29)

    def to_numeric(v: Any) -> str:
        t = type(v)
        if t is bool or _is_numpy_bool(v):
            raise _Bad(f"expected {f.type}, got {_tname(v)}")
        if isinstance(v, float):
            v = float.__float__(v)
            if not math.isfinite(v):
                raise _Bad(f"{f.type} must be finite, got {v!r}")
            d = decimal.Decimal(repr(v))
        else:
            d = _decimal(v, f.type)
        # Bounds from the leading digit's exponent first: normalize() and
        # format() below then only ever see numbers of sane size.
        if not d.is_zero():
            if d.adjusted() >= max_int:
                raise _Bad(f"{f.type} has {d.adjusted() + 1} digits before the point, at most {max_int} allowed")
            if d.adjusted() < -max_scale:
                raise _Bad(f"{f.type} has {-d.adjusted()} or more digits after the point, at most {max_scale} allowed")
        d = _DEC.normalize(d)
        exp = d.as_tuple().exponent
        ndigits = len(d.as_tuple().digits)
        scale = -exp if exp < 0 else 0
        int_digits = 0 if d.is_zero() else max(0, ndigits + exp)
        if scale > max_scale:
            raise _Bad(f"{f.type} has {scale} digits after the point, at most {max_scale} allowed")
        if int_digits > max_int:
            raise _Bad(f"{f.type} has {int_digits} digits before the point, at most {max_int} allowed")
        return format(d, "f")

    return to_numeric


def _is_numpy_bool(v: Any) -> bool:
    t = type(v)
    return t.__module__ == "numpy" and t.__name__ in ("bool", "bool_")


def _to_bool(v: Any) -> bool:
    t = type(v)
    if t is bool:
        return v
    if _is_numpy_bool(v):
        return bool(v)
    if t is int and v in (0, 1):
        return bool(v)
    if t is str:
        s = v.strip().lower() if len(v) < 16 else v
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    raise _Bad(f"expected BOOLEAN, got {show(v)}" if t in (int, str) else f"expected BOOLEAN, got {_tname(v)}")


def _make_string(f: Field) -> Callable[[Any], str]:
    max_len = f.max_length

    def to_string(v: Any) -> str:
        t = type(v)
        if t is str:
            s = _check_utf8(v)
        elif t is bool or _is_numpy_bool(v):
            raise _Bad(f"expected STRING, got {_tname(v)}")
        elif isinstance(v, str):
            s = _check_utf8(str.__str__(v))  # the characters, whatever a subclass overrides
        elif isinstance(v, int):
            i = int.__index__(v)
            if i.bit_length() > 4 * MAX_NUMERIC_CHARS:  # str() of a huge int is slow, past 4,300 digits an error
                raise _Bad(f"integer too large for STRING: {show(i)}")
            s = str(i)
        elif isinstance(v, (decimal.Decimal, uuid.UUID)):
            s = str(v)
        else:
            raise _Bad(f"expected STRING, got {_tname(v)}")
        if max_len is not None and len(s) > max_len:
            raise _Bad(f"string of {len(s)} characters exceeds maxLength {max_len}")
        return s

    return to_string


def _make_bytes(f: Field) -> Callable[[Any], str]:
    max_len = f.max_length

    def to_bytes(v: Any) -> str:
        if isinstance(v, (bytes, bytearray, memoryview)):
            raw = bytes(v)
        elif type(v) is str:
            try:
                raw = base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raise _Bad("BYTES given as str must be base64") from None
        else:
            raise _Bad(f"expected BYTES, got {_tname(v)}")
        if max_len is not None and len(raw) > max_len:
            raise _Bad(f"{len(raw)} bytes exceeds maxLength {max_len}")
        return base64.b64encode(raw).decode("ascii")

    return to_bytes


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
        return dt.datetime(v.year, v.month, v.day, v.hour, v.minute, v.second,
                           v.microsecond).isoformat(timespec="microseconds")
    raise _Bad(f"expected DATETIME, got {_tname(v)}")


def _to_json(v: Any) -> str:
    try:
        # No cycle check: a circular value ends in RecursionError below.
        return _check_utf8(_encode_json(v))
    except TypeError as exc:
        raise _Bad(f"JSON value is not serialisable: {safe_text(str(exc), 200)}") from None
    except ValueError as exc:
        raise _Bad(f"JSON value is invalid: {safe_text(str(exc), 200)}") from None
    except RecursionError:
        raise _Bad("JSON value is nested too deeply, or circular") from None


def _to_geography(v: Any) -> str:
    if type(v) is not str or not v.strip():
        raise _Bad(f"expected GEOGRAPHY as a non-empty WKT or GeoJSON string, got {_tname(v)}")
    problem = geography_problem(_check_utf8(v))
    if problem:
        raise _Bad(f"GEOGRAPHY is not valid WKT or GeoJSON: {problem}")
    return v


_SCALARS: dict[str, Callable[[Field], Callable[[Any], Any]]] = {
    "INTEGER": lambda f: _to_int,
    "FLOAT": lambda f: _to_float,
    "NUMERIC": _make_numeric,
    "BIGNUMERIC": _make_numeric,
    "BOOLEAN": lambda f: _to_bool,
    "STRING": _make_string,
    "BYTES": _make_bytes,
    "TIMESTAMP": lambda f: _to_timestamp,
    "DATE": lambda f: _to_date,
    "TIME": lambda f: _to_time,
    "DATETIME": lambda f: _to_datetime,
    "JSON": lambda f: _to_json,
    "GEOGRAPHY": lambda f: _to_geography,
}


def _compile_field(f: Field, unknown: str) -> Callable[[Any], Any]:
    """The converter for one non-null value of ``f`` (repetition included)."""
    if f.type == "RECORD":
        conv = _compile_record(f.fields, unknown)
    else:
        conv = _SCALARS[f.type](f)
    if not f.repeated:
        return conv

    def repeated(v: Any) -> list:
        if type(v) not in (list, tuple):
            raise _Bad(f"expected a list for REPEATED {f.type}, got {_tname(v)}")
        out = []
        for i, item in enumerate(v):
            if item is None:
                raise _Bad("REPEATED values cannot contain null", [i])
            try:
                out.append(conv(item))
            except _Bad as exc:
                exc.path.insert(0, i)
                raise
            except Exception as exc:
                raise _foreign(exc, i) from exc
        return out

    return repeated


def _fast_path(f: Field) -> str | None:
    """Inline source for the common, already-canonical case of a scalar, or None.

    The generic converter still handles everything else; these only skip a
    call for values that need no conversion, so behaviour is identical.
    """
    if f.repeated:
        return None
    if f.type == "STRING":
        limit = f" and len(x) <= {f.max_length}" if f.max_length is not None else ""
        return f"type(x) is str and x.isascii(){limit}"
    if f.type == "INTEGER":
        return f"type(x) is int and {_INT64_MIN} <= x <= {_INT64_MAX}"
    if f.type == "FLOAT":
        return "type(x) is float and x - x == 0.0"  # false for NaN and infinities
    if f.type == "BOOLEAN":
        return "type(x) is bool"
    return None


def _compile_record(fields: tuple[Field, ...], unknown: str) -> Callable[..., dict]:
    """Generate one function per record type.

    A generated function with the field names as constants runs about twice
    as fast as a loop over (name, converter) pairs, and this sits on the
    append hot path. On failure it adds the current field name to the path.
    """
    names = frozenset(f.name for f in fields)
    env: dict[str, Any] = {
        "_Bad": _Bad,
        "_MISSING": _MISSING,
        "_Mapping": Mapping,
        "_tname": _tname,
        "_unknown": _unknown_key,
        "_names": names,
        "_ignore": unknown == "ignore",
        "_ts": _epoch_us,
        "_foreign": _foreign,
    }
    body = []
    for i, f in enumerate(fields):
        conv = f"_c{i}"
        env[conv] = _compile_field(f, unknown)
        fast = _fast_path(f)
        if fast is not None:
            store = f"out[{f.name!r}] = x if {fast} else {conv}(x)"
        elif f.type == "TIMESTAMP" and not f.repeated:
            store = f"out[{f.name!r}] = _ts(x) if type(x) is float or type(x) is int else {conv}(x)"
        else:
            store = f"out[{f.name!r}] = {conv}(x)"
        null = 'raise _Bad("REQUIRED field is null")' if f.required else "pass"
        missing = '\n        else:\n            raise _Bad("REQUIRED field is missing")' if f.required else ""
        body.append(
            f"        field = {f.name!r}\n"
            f"        x = get(field, _MISSING)\n"
            f"        if x is not _MISSING:\n"
            f"            seen += 1\n"
            f"            if x is not None:\n"
            f"                {store}\n"
            f"            else:\n"
            f"                {null}"
            f"{missing}\n"
        )
    src = (
        "def record(v, out=None):\n"
        "    if type(v) is not dict:\n"
        "        if not isinstance(v, _Mapping):\n"
        "            raise _Bad(f'expected an object (dict), got {_tname(v)}')\n"
        "        try:\n"
        "            v = dict(v)\n"
        "        except Exception as exc:\n"
        "            raise _foreign(exc, None) from exc\n"
        "    if out is None:\n"
        "        out = {}\n"
        "    get = v.get\n"
        "    seen = 0\n"
        "    field = None\n"
        "    try:\n"
        + "".join(body)
        + "    except _Bad as exc:\n"
        "        exc.path.insert(0, field)\n"
        "        raise\n"
        "    except Exception as exc:\n"
        "        raise _foreign(exc, field) from exc\n"
        "    if seen != len(v) and not _ignore:\n"
        "        try:\n"
        "            _unknown(v, _names)\n"
        "        except _Bad:\n"
        "            raise\n"
        "        except Exception as exc:\n"
        "            raise _foreign(exc, None) from exc\n"
        "    return out\n"
    )
    exec(compile(src, f"<bqspool record {sorted(names)[:3]}>", "exec"), env)
    return env["record"]


def _foreign(exc: BaseException, field: Any) -> _Bad:
    """An exception the caller's own objects raised while we read them.

    Any of those (a ``keys()`` or ``__getitem__`` that raises, a tzinfo
    that lies, an ``__index__`` that fails, recursion) is the event's fault,
    so it becomes the field's error like any other; the original is chained
    as ``__cause__`` for whoever debugs it.
    """
    if isinstance(exc, RecursionError):
        reason = "value is nested too deeply, or circular"
    else:
        reason = f"reading the value raised {type_name(exc)}"
    return _Bad(reason, [] if field is None else [field])


def _unknown_key(v: dict, names: frozenset) -> None:
    for key in v:
        if type(key) is not str or key not in names:
            if not isinstance(key, str):
                raise _Bad(f"field names must be strings, got {show(key)}")
            if key == EVENT_ID:
                raise _Bad(f"{EVENT_ID} is assigned by the buffer", [key])
            raise _Bad("unknown field (not in the table schema)", [key])


def format_path(parts: list) -> str:
    """``a.b[2].c``; a caller's key is cut to 100 characters, surrogates escaped."""
    out = ""
    for p in parts:
        if type(p) is int:
            out += f"[{p}]"
        else:
            name = safe_text(p, 100)
            out += f".{name}" if out else name
    return out


class Coercer:
    """Compiled validator for one table; cheap to call from many threads."""

    def __init__(self, table: TableDef, *, unknown_fields: str = "error", max_row_bytes: int = DEFAULT_MAX_ROW_BYTES):
        if unknown_fields not in UNKNOWN_POLICIES:
            raise ConfigError(f"unknown_fields must be one of {UNKNOWN_POLICIES}, got {unknown_fields!r}")
        self.table = table
        self.max_row_bytes = max_row_bytes
        self._record = _compile_record(table.user_fields, unknown_fields)
        # Canonical events take the compiled fast path; it returns None for
        # anything else, and the generated code above decides those.
        fast = compile_fast(table.user_fields, unknown=unknown_fields)
        self.fast, self.fast_lines = fast.one, fast.lines

    def coerce(self, event: Any) -> dict:
        """The event's coerced columns in table order (no ``_event_id``)."""
        try:
            return self._record(event)
        except _Bad as exc:
            raise ValidationError(exc.reason, path=format_path(exc.path), stream=self.table.name) from exc.__cause__

    def encode(self, event: Any, event_id: str) -> bytes:
        """The stored row as UTF-8 JSON: ``_event_id`` first, then table order.

        Raises ValidationError for an invalid event and for a row over
        ``max_row_bytes``.
        """
        data = self.fast(event, event_id)
        if data is None:
            data = self.encode_full(event, event_id)
        if len(data) > self.max_row_bytes:
            raise self.too_big(len(data))
        return data

    def encode_full(self, event: Any, event_id: str) -> bytes:
        """:meth:`encode` by the full path alone, with no size check: what :attr:`fast` falls back to."""
        try:
            row = self._record(event, {EVENT_ID: event_id})
        except _Bad as exc:
            raise ValidationError(exc.reason, path=format_path(exc.path), stream=self.table.name) from exc.__cause__
        return _encoder().encode(row)

    def too_big(self, nbytes: int) -> ValidationError:
        return ValidationError(f"row of {nbytes} bytes exceeds the {self.max_row_bytes}-byte limit",
                               stream=self.table.name)

    def payload(self, event: Any, event_id: str) -> str:
        """:meth:`encode` as text."""
        return self.encode(event, event_id).decode("utf-8")
