"""What the commit log says was loaded: per table, per day, events and bytes.

Read from listings alone where it can: a done marker archived in
``commit-archive/TABLE/DAY/`` carries its events and bytes in its name
(``ID-ATTEMPT.eEVENTS.bBYTES.done``). Done records not archived yet, and
markers archived by older versions, are read (once each). A day is the UTC
day its record was created, which is when its load job was submitted.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from .commitlog import Layout, LogReader
from .interfaces import ObjectStore

_DONE_RE = re.compile(r"^(?P<key>[^.]+)\.e(?P<events>\d+)\.b(?P<bytes>\d+)\.done$")


@dataclass(frozen=True)
class Load:
    """One finished load job of ``table``: the UTC day it ran, its record's key, events and bytes."""

    table: str
    day: str
    key: str
    events: int
    bytes: int


def days_between(first: dt.date, last: dt.date) -> Iterator[str]:
    """Every UTC day from ``first`` to ``last``, both included, as YYYY-MM-DD."""
    day = first
    while day <= last:
        yield day.isoformat()
        day += dt.timedelta(days=1)


def loads(store: ObjectStore, layout: Layout, table: str, first: dt.date, last: dt.date) -> list[Load]:
    """Every load job of ``table`` that finished, by the day its record was created, in ``[first, last]``."""
    out: dict[str, Load] = {}
    for day in days_between(first, last):
        listed = store.list_objects(layout.commit_archive(table, day))
        names = {o.name.rpartition("/")[2] for o in listed}
        for file in sorted(names):
            m = _DONE_RE.match(file)
            if m:
                out[m["key"]] = Load(table, day, m["key"], int(m["events"]), int(m["bytes"]))
            elif file.endswith(".done"):  # archived before markers carried their counts
                key = file.partition(".")[0]
                found = store.read_object(f"{layout.commit_archive(table, day)}{file}")
                doc = json.loads(found[0]) if found else {}
                out[key] = Load(
                    table, day, key, int(doc.get("events") or doc.get("rows") or 0), int(doc.get("bytes", 0))
                )
    reader = LogReader(store, layout)
    live = reader.table(table)
    for rec in live.records.values():
        made = dt.datetime.fromtimestamp(rec.created, dt.UTC).date()
        if live.outcome(rec.key) == "done" and first <= made <= last and rec.key not in out:
            out[rec.key] = Load(table, made.isoformat(), rec.key, rec.events or 0, rec.nbytes)
    return sorted(out.values(), key=lambda ld: (ld.day, ld.key))


def per_day(found: list[Load]) -> dict[str, dict[str, int]]:
    """``{day: {"jobs", "events", "bytes"}}`` of some loads."""
    out: dict[str, dict[str, int]] = {}
    for ld in found:
        d = out.setdefault(ld.day, {"jobs": 0, "events": 0, "bytes": 0})
        d["jobs"] += 1
        d["events"] += ld.events
        d["bytes"] += ld.bytes
    return out
