"""Random valid events for any table, from its definition."""

from __future__ import annotations

import datetime as dt
import random

from bqspool.schemas.definition import Field, TableDef

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 24, 12, tzinfo=UTC)


def _scalar(f: Field, rng: random.Random):
    t = f.type
    if t == "STRING":
        text = f"{f.name}-{rng.randrange(10**6)}" + ("é✓" if rng.random() < 0.1 else "")
        return text[: f.max_length] if f.max_length is not None else text
    if t == "INTEGER":
        return rng.randrange(-(2**40), 2**40)
    if t == "FLOAT":
        return rng.uniform(-1e6, 1e6)
    if t == "NUMERIC":
        if f.precision is not None:
            scale = f.scale or 0
            digits = f.precision - scale
            return f"{rng.randrange(10**digits)}" + (f".{rng.randrange(10**scale):0{scale}d}" if scale else "")
        return f"{rng.randrange(-(10**12), 10**12)}.{rng.randrange(10**9):09d}"
    if t == "BIGNUMERIC":
        return f"{rng.randrange(10**30)}.{rng.randrange(10**20):020d}"
    if t == "BOOLEAN":
        return rng.random() < 0.5
    if t == "BYTES":
        return rng.randbytes(rng.randrange(1, 20))
    if t == "TIMESTAMP":
        return NOW - dt.timedelta(seconds=rng.randrange(86400 * 30), microseconds=rng.randrange(10**6))
    if t == "DATE":
        return (NOW - dt.timedelta(days=rng.randrange(3000))).date()
    if t == "TIME":
        return dt.time(rng.randrange(24), rng.randrange(60), rng.randrange(60), rng.randrange(10**6))
    if t == "DATETIME":
        return dt.datetime(2026, 1, 1) + dt.timedelta(seconds=rng.randrange(10**7), microseconds=rng.randrange(10**6))
    if t == "JSON":
        return {"k": rng.randrange(100), "tags": ["a", "b"][: rng.randrange(3)], "nested": {"x": rng.random() < 0.5}}
    if t == "GEOGRAPHY":
        return f"POINT({rng.randrange(-179, 179)} {rng.randrange(-89, 89)})"
    raise AssertionError(t)


def _value(f: Field, rng: random.Random):
    one = (lambda: _record(f.fields, rng)) if f.type == "RECORD" else (lambda: _scalar(f, rng))
    if f.repeated:
        return [one() for _ in range(rng.randrange(0, 4))]
    return one()


def _record(fields, rng: random.Random) -> dict:
    out = {}
    for f in fields:
        if f.name == "_event_id":
            continue
        if f.required or rng.random() < 0.8:
            out[f.name] = _value(f, rng)
    return out


def make_event(table: TableDef, rng: random.Random) -> dict:
    return _record(table.fields, rng)
