"""What ``bqspool status``, the monitor and the metrics show of each stage, per table.

The ship stage's view is in this host's buffer file (the ledger's batches
and lease); the commit stage's is in the bucket: objects waiting, load jobs
in the last 24 h against the budget, and what is held back.
"""

from __future__ import annotations

import sqlite3
import time

from ..commit import bucket_lease
from ..commit.commitlog import DAY_S, LogReader
from ..interfaces import ObjectStore, StoredObject
from ..layout import HELD, REASON, Layout, ObjectArea
from ..ship import ledger

HeldByArea = dict[ObjectArea, dict[str, list[StoredObject]]]


def ship_status(conn: sqlite3.Connection) -> dict:
    """The ship stage on this host: batches by state, and who ships."""
    states = ledger.states(conn)
    return {"batches": states, "quarantined": states.get("quarantined", 0), "shipping": ledger.lease_holder(conn)}


def held_by_area(store: ObjectStore, layout: Layout) -> HeldByArea:
    """What the bucket holds back, per area (quarantine, dead) and table: objects and their ``.reason`` files."""
    return {area: layout.by_table(store, layout.area(area)) for area in HELD}


def commit_status(
    store: ObjectStore,
    layout: Layout,
    budget: int,
    tables: list[str] | None = None,
    now: float | None = None,
    held_back: HeldByArea | None = None,
) -> dict:
    """What ``bqspool status`` shows of the commit stage, per table: objects
    waiting and the oldest one's age, load jobs in the last 24 h against the
    budget, and objects held back (quarantined, dead letters). ``tables``
    (the schema set's) are shown even when nothing of theirs waits;
    ``held_back`` is :func:`held_by_area`'s answer where the caller has it already."""
    now = time.time() if now is None else now
    reader = LogReader(store, layout)
    held_back = held_by_area(store, layout) if held_back is None else held_back
    counts = {
        area: {t: n for t, objs in per_table.items() if (n := sum(not o.name.endswith(REASON) for o in objs))}
        for area, per_table in held_back.items()
    }
    staged = layout.by_table(store, layout.staged())
    names = set(staged) | set(layout.by_table(store, layout.commits())) | set(tables or ())
    out = {}
    for table in sorted(names.union(*counts.values())):
        waiting = staged.get(table, [])
        jobs = reader.jobs_since(table, now - DAY_S, reader.table(table), now)
        out[table] = {
            "waiting": len(waiting),
            "oldest_age_s": round(now - min(o.created for o in waiting), 1) if waiting else None,
            "jobs_24h": len(jobs),
            "budget": budget,
            "quarantined": counts["quarantine"].get(table, 0),
            "dead_letters": counts["dead"].get(table, 0),
        }
    return {"tables": out, "committing": bucket_lease.holder_of(store, layout.lease)}
