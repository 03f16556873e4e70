"""Stored form back to Python values: the inverse of :mod:`.coerce`.

Used to read events back out of the buffer (``Buffer.peek``) and by tests
that prove the round trip: ``decode(json.loads(coerce(event))) == event``
after coercion.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from collections.abc import Callable
from typing import Any

from .definition import Field, TableDef

UTC = dt.UTC


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def _ts(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


_SCALARS: dict[str, Callable[[Any], Any]] = {
    "INTEGER": int,
    "FLOAT": float,
    "NUMERIC": decimal.Decimal,
    "BIGNUMERIC": decimal.Decimal,
    "BOOLEAN": bool,
    "STRING": str,
    "GEOGRAPHY": str,
    "BYTES": base64.b64decode,
    "TIMESTAMP": _ts,
    "DATE": dt.date.fromisoformat,
    "TIME": lambda us: (dt.datetime.min + dt.timedelta(microseconds=us)).time(),
    "DATETIME": dt.datetime.fromisoformat,
    "JSON": json.loads,
}


def _field_decoder(f: Field) -> Callable[[Any], Any]:
    conv = _record_decoder(f.fields) if f.type == "RECORD" else _SCALARS[f.type]
    if f.repeated:
        return lambda v: [conv(x) for x in v]
    return conv


def _record_decoder(fields: tuple[Field, ...]) -> Callable[[dict], dict]:
    plan = [(f.name, _field_decoder(f), f.repeated) for f in fields]

    def record(row: dict) -> dict:
        out: dict[str, Any] = {}
        for name, conv, repeated in plan:
            value = row.get(name)
            if value is None:
                out[name] = [] if repeated else None
            else:
                out[name] = conv(value)
        return out

    return record


def decoder(table: TableDef) -> Callable[[dict], dict]:
    """A function turning one stored row (parsed JSON) into Python values.

    Every column is present in the result: a missing NULLABLE is ``None``, a
    missing REPEATED is ``[]``.
    """
    return _record_decoder(table.fields)
