"""The converters of single values: one per BigQuery type, into the stored form.

Each takes a non-null value a caller handed in and returns its stored form
or raises :class:`_Bad` with the reason; :mod:`.coerce` compiles them into a
table's validator (and the TIME family is in :mod:`.times`). Every
conversion whose cost grows with the value (digits, exponents, nesting) is
bounded before it runs, and no message quotes an unbounded value.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import json
import json.encoder
import math
import numbers
import operator
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from .definition import Field
from .display import safe_text, show, type_name
from .geography import geography_problem

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MILLIS_THRESHOLD = 1e11  # epoch values at or above this are milliseconds
_DEC = decimal.Context(prec=200, traps=[decimal.InvalidOperation])
_TRUE = frozenset(("true", "t", "yes", "y", "1"))
_FALSE = frozenset(("false", "f", "no", "n", "0"))
_EPOCH_RE = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")


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
    _json_chunks = None
    _encode_json = _encode  # type: ignore[assignment]


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
    max_scale = (f.scale or 0) if f.precision is not None else (38 if big else 9)
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
        exp = int(d.as_tuple().exponent)  # finite here: never 'n', 'N' or 'F'
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
