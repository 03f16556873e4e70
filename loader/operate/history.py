"""What the commit log says was loaded: per table, per day, events and bytes.

Read from listings alone where it can: a done marker archived in
``commit-archive/TABLE/DAY/`` carries its events and bytes in its name
(``ID-ATTEMPT.eEVENTS.bBYTES.done``), and every summary what it cost in
its metadata (``bqspool-ops``, see :mod:`bqspool.loader.billing`). Done
records not archived yet, and markers archived by older versions, are
read (once each). A day is the UTC
day its record was created, which is when its load job was submitted.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..billing import OPS_KEY, add_ops, decode_ops
from ..commit.commitlog import LogReader
from ..interfaces import ObjectStore
from ..layout import Layout, RecordName


@dataclass(frozen=True)
class Load:
    """One finished load job of ``table``: the UTC day its record was made, its key,
    events and bytes, when its done marker was written (epoch seconds), and its
    objects where they were asked for (see :func:`loads`)."""

    table: str
    day: str
    key: str
    events: int
    bytes: int
    at: float = 0.0
    sources: tuple[str, ...] = ()
    ops: dict[str, int] = field(default_factory=dict, compare=False)  # requests it cost (see billing)


@dataclass
class Scan:
    """What the commit log says of a table over some days: its finished loads,
    and the requests every closed record recorded (done or not), per day."""

    loads: list[Load]
    spent: dict[str, dict[str, int]]  # day -> operation -> count


def days_between(first: dt.date, last: dt.date) -> Iterator[str]:
    """Every UTC day from ``first`` to ``last``, both included, as YYYY-MM-DD."""
    day = first
    while day <= last:
        yield day.isoformat()
        day += dt.timedelta(days=1)


def loads(store: ObjectStore, layout: Layout, table: str, first: dt.date, last: dt.date, **kw: Any) -> list[Load]:
    """Every load job of ``table`` that finished, by the day its record was created, in ``[first, last]``
    (:func:`scan`'s ``loads``; ``sources=True`` also names each job's objects, at a read of each
    archived record, once per ``reader``)."""
    return scan(store, layout, table, first, last, **kw).loads


def scan(
    store: ObjectStore,
    layout: Layout,
    table: str,
    first: dt.date,
    last: dt.date,
    *,
    reader: LogReader | None = None,
    sources: bool = False,
) -> Scan:
    """:func:`loads`, and the requests recorded in the summaries' metadata, from the same listings."""
    reader = reader or LogReader(store, layout)
    live = reader.table(table)
    out: dict[str, Load] = {}
    spent: dict[str, dict[str, int]] = {}
    for day in days_between(first, last):
        folder = layout.commit_archive(table, day)
        listed = [(o, RecordName.parse(o.name)) for o in store.list_objects(folder)]
        records = {n.key: o for o, n in listed if n is not None and n.kind == "record"}
        for o, name in sorted(listed, key=lambda pair: pair[0].name):
            ops = decode_ops(o.metadata.get(OPS_KEY))
            if ops:
                add_ops(spent.setdefault(day, {}), ops)
            if name is None or name.kind != "done" or name.key in live.records:
                continue
            # The record beside it (archived by an earlier version), or the done
            # summary itself, which holds the record (see commit/tidy.py).
            record = records.get(name.key, o)
            named = name.events is not None
            found = reader.record(record) if record is not None and (sources or not named) else None
            if named:
                events, nbytes = name.events or 0, name.nbytes or 0
            elif found is not None and found.events is not None:  # archived before markers carried counts
                events, nbytes = found.events, found.nbytes
            else:
                data = store.read_object(o.name)
                doc = json.loads(data.data) if data else {}
                events, nbytes = int(doc.get("events") or doc.get("rows") or 0), int(doc.get("bytes", 0))
            out[name.key] = Load(table, day, name.key, events, nbytes, o.created, found.sources if found else (), ops)
    for rec in live.records.values():
        made = dt.datetime.fromtimestamp(rec.created, dt.UTC).date()
        marker = live.outcomes.get(rec.key, {}).get("done")
        if marker is not None and first <= made <= last:
            out[rec.key] = Load(
                table, made.isoformat(), rec.key, rec.events or 0, rec.nbytes, marker.created, rec.sources
            )
    return Scan(sorted(out.values(), key=lambda ld: (ld.day, ld.key)), spent)


def per_day(found: list[Load]) -> dict[str, dict[str, int]]:
    """``{day: {"jobs", "events", "bytes"}}`` of some loads."""
    out: dict[str, dict[str, int]] = {}
    for ld in found:
        d = out.setdefault(ld.day, {"jobs": 0, "events": 0, "bytes": 0})
        d["jobs"] += 1
        d["events"] += ld.events
        d["bytes"] += ld.bytes
    return out
