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

from collections.abc import Callable, Mapping
from typing import Any

from .converters import (
    _INT64_MAX,
    _INT64_MIN,
    _Bad,
    _encoder,
    _json_chunks,
    _make_bytes,
    _make_numeric,
    _make_string,
    _tname,
    _to_bool,
    _to_float,
    _to_geography,
    _to_int,
    _to_json,
)
from .definition import EVENT_ID, Field, TableDef
from .display import safe_text, show, type_name
from .errors import ConfigError, ValidationError
from .fastpath import compile_fast
from .times import _epoch_us, _to_date, _to_datetime, _to_time, _to_timestamp

_MISSING = object()
UNKNOWN_POLICIES = ("error", "ignore")
DEFAULT_MAX_ROW_BYTES = 10 * 1024 * 1024


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
    body = [_field_source(f, i, unknown, env) for i, f in enumerate(fields)]
    src = _RECORD_SOURCE.replace("{body}", "".join(body))
    exec(compile(src, f"<bqspool record {sorted(names)[:3]}>", "exec"), env)
    return env["record"]


# The generated function; {body} is one block per field (see _field_source).
_RECORD_SOURCE = """\
def record(v, out=None):
    if type(v) is not dict:
        if not isinstance(v, _Mapping):
            raise _Bad(f'expected an object (dict), got {_tname(v)}')
        try:
            v = dict(v)
        except Exception as exc:
            raise _foreign(exc, None) from exc
    if out is None:
        out = {}
    get = v.get
    seen = 0
    field = None
    try:
{body}    except _Bad as exc:
        exc.path.insert(0, field)
        raise
    except Exception as exc:
        raise _foreign(exc, field) from exc
    if seen != len(v) and not _ignore:
        try:
            _unknown(v, _names)
        except _Bad:
            raise
        except Exception as exc:
            raise _foreign(exc, None) from exc
    return out
"""


def _field_source(f: Field, i: int, unknown: str, env: dict[str, Any]) -> str:
    """The generated block that converts field ``f`` (the ``i``-th); its converter goes into ``env``."""
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
    return (
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
        fast = compile_fast(table.user_fields, unknown=unknown_fields, convert=_compile_field, json_chunks=_json_chunks)
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
        return ValidationError(
            f"row of {nbytes} bytes exceeds the {self.max_row_bytes}-byte limit", stream=self.table.name
        )

    def payload(self, event: Any, event_id: str) -> str:
        """:meth:`encode` as text."""
        return self.encode(event, event_id).decode("utf-8")
