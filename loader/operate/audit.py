"""The exactly-once audit: duplicates in the warehouse, and its rows against the commit log.

Per table, over the last N days of partitions (UTC days, today included):

- ``COUNT(*)`` against ``COUNT(DISTINCT _event_id)``; when they differ, up
  to five duplicated ids with how often each is there;
- the rows the warehouse holds for those days against the events the
  commit log says were loaded by jobs of those days.

The second comparison is by day on two clocks, the event's partition time
and the load job's day, so events stamped on another day than the one they
were loaded (late events, loads just after midnight) show as a difference
at the window's edges. Duplicates never do: those fail the audit.

Both queries are dry-run first, and what they scan is reported, because it
is billed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from bqspool.schemas.definition import EVENT_ID, TableDef
from bqspool.schemas.errors import BackendError
from bqspool.schemas.registry import SchemaSet

from ..interfaces import ObjectStore, QueryParam, Warehouse
from ..layout import Layout
from ..progress import tracked
from . import history

EXAMPLES = 5


@dataclass
class TableAudit:
    table: str
    rows: int = 0
    distinct_ids: int = 0
    duplicates: list[dict] = field(default_factory=list)  # {"_event_id", "copies"}
    logged_events: int = 0
    scanned_bytes: int | None = 0
    whole_table: bool = False  # not partitioned: the whole table was counted
    missing: bool = False  # no such table
    error: str | None = None  # the warehouse refused to count (a column changed by hand, say)

    @property
    def duplicated(self) -> int:
        return self.rows - self.distinct_ids

    @property
    def difference(self) -> int:
        """Rows held minus events the commit log says were loaded."""
        return self.rows - self.logged_events

    def as_dict(self) -> dict:
        return {**self.__dict__, "duplicated": self.duplicated, "difference": self.difference}


def since_filter(table: TableDef) -> str:
    """A WHERE condition for the partitions from the DATE parameter ``@since`` on
    (TRUE for a table without partitioning): it bounds what a query scans."""
    part = table.partitioning
    if part is None:
        return "TRUE"
    column = table.field(part.field)
    cast = {"TIMESTAMP": "TIMESTAMP(@since)", "DATETIME": "DATETIME(@since)", "DATE": "@since"}[column.type]
    return f"`{part.field}` >= {cast}"


def audit_table(
    warehouse: Warehouse, store: ObjectStore | None, layout: Layout, table: TableDef, days: int, today: dt.date
) -> TableAudit:
    """Audit one table over the ``days`` days up to ``today`` (see the module)."""
    out = TableAudit(table.name, whole_table=table.partitioning is None)
    if warehouse.table_options(table.name) is None:
        out.missing = True
        return out
    since = today - dt.timedelta(days=days - 1)
    params = [QueryParam("since", "DATE", since)]
    where = since_filter(table)
    count_sql = f"SELECT COUNT(*) AS n, COUNT(DISTINCT `{EVENT_ID}`) AS d FROM `{table.name}` WHERE {where}"
    dup_sql = (
        f"SELECT `{EVENT_ID}` AS id, COUNT(*) AS copies FROM `{table.name}` WHERE {where} "
        f"GROUP BY `{EVENT_ID}` HAVING COUNT(*) > 1 ORDER BY copies DESC, id LIMIT {EXAMPLES}"
    )
    scanned = warehouse.dry_run(count_sql, params)
    (row,) = warehouse.query(count_sql, params)
    out.rows, out.distinct_ids = int(row["n"]), int(row["d"])
    if out.duplicated:
        extra = warehouse.dry_run(dup_sql, params)
        scanned = None if scanned is None or extra is None else scanned + extra
        out.duplicates = [{EVENT_ID: r["id"], "copies": int(r["copies"])} for r in warehouse.query(dup_sql, params)]
    out.scanned_bytes = scanned
    if store is not None:
        out.logged_events = sum(ld.events for ld in history.loads(store, layout, table.name, since, today))
    return out


def audit(
    warehouse: Warehouse,
    store: ObjectStore | None,
    layout: Layout,
    schemas: SchemaSet,
    days: int,
    today: dt.date,
    progress: bool = False,
) -> list[TableAudit]:
    """Audit every table of ``schemas`` (see the module); ``store`` None skips the
    commit-log comparison. A table the warehouse refuses to count (its columns
    changed by hand: drift says how) carries the error; the others are counted.
    With ``progress``, a bar (or log lines) per table audited: each is a query."""
    out = []
    tables = schemas.tables()
    for t in tracked(tables, len(tables), progress, what="auditing", unit="tables"):
        try:
            out.append(audit_table(warehouse, store, layout, t, days, today))
        except BackendError as exc:  # not an outage: those stop the audit (and are retried)
            out.append(TableAudit(t.name, whole_table=t.partitioning is None, error=str(exc)))
    return out
