"""What bqspool's data costs, from what it loaded and what the warehouse and the bucket hold.

Ingestion is counted from the commit log (events and Parquet bytes per
table per day, :mod:`.history`): batch load jobs are free. Beside it, what
the same rows would have cost through legacy streaming inserts (each row
billed as at least 1 KB) and through the Storage Write API (a monthly free
amount, prorated to the window). Row sizes are the warehouse's logical
bytes per row where it reports them; otherwise the Parquet bytes per event,
a lower bound, and the report says which. Storage is priced per month from
the tables' and the archive's sizes now; queries from the warehouse's job
history where it keeps one. Prices come from the configuration.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bqspool.schemas.errors import NotAvailableError
from bqspool.schemas.registry import SchemaSet

from . import history
from .archive import archive_size, by_class
from .commitlog import Layout
from .config import Config
from .interfaces import ObjectStore, Warehouse

GIB = 1024**3
TIB = 1024**4
MIB_200 = 200 * 1024**2
MIN_STREAMED_ROW = 1024  # legacy streaming bills each row as at least 1 KB


def _usd(x: float) -> float:
    return round(x, 6)


def storage_usd_month(config: Config, active_bytes: float, long_term_bytes: float) -> float:
    """BigQuery storage a month, active and long-term, at the configured prices."""
    return (
        active_bytes / GIB * config.price_active_storage_gib_month
        + long_term_bytes / GIB * config.price_long_term_storage_gib_month
    )


def archive_usd_month(config: Config, storage_class: str, nbytes: float) -> float:
    """Cloud Storage a month for ``nbytes`` in ``storage_class`` (an unknown class at STANDARD's price)."""
    prices = {
        "NEARLINE": config.price_gcs_nearline_gib_month,
        "COLDLINE": config.price_gcs_coldline_gib_month,
        "ARCHIVE": config.price_gcs_archive_gib_month,
    }
    return nbytes / GIB * prices.get(storage_class, config.price_gcs_standard_gib_month)


def cost(
    store: ObjectStore,
    warehouse: Warehouse,
    layout: Layout,
    schemas: SchemaSet,
    config: Config,
    days: int,
    today: dt.date,
    now: float,
) -> dict:
    """The cost report over the ``days`` days up to ``today`` (see the module), as data."""
    since = today - dt.timedelta(days=days - 1)
    tables: dict[str, dict[str, Any]] = {}
    streamed_bytes = write_api_bytes = 0.0
    storage_known = True
    for name in schemas:
        found = history.loads(store, layout, name, since, today)
        events = sum(ld.events for ld in found)
        parquet = sum(ld.bytes for ld in found)
        stored = warehouse.table_storage(name)
        reported = stored is not None and stored.rows > 0 and stored.total_bytes > 0
        row_bytes = (stored.total_bytes / stored.rows) if reported and stored else (parquet / events if events else 0)
        streamed_bytes += events * max(row_bytes, MIN_STREAMED_ROW)
        write_api_bytes += events * row_bytes
        if stored is not None and not reported and events:
            storage_known = False
        tables[name] = {
            "jobs": len(found),
            "events": events,
            "parquet_bytes": parquet,
            "row_bytes": round(row_bytes, 1),
            "row_bytes_from": "warehouse" if reported else "parquet (a lower bound)",
            "per_day": history.per_day(found),
            "storage": None
            if stored is None
            else {"rows": stored.rows, "active_bytes": stored.active_bytes, "long_term_bytes": stored.long_term_bytes},
        }
    free = config.price_storage_write_free_tib * TIB * days / 30.0
    active = sum(t["storage"]["active_bytes"] for t in tables.values() if t["storage"])
    long_term = sum(t["storage"]["long_term_bytes"] for t in tables.values() if t["storage"])
    archive: dict[str, dict[str, float]] = {}
    for cls, size in by_class(archive_size(store, layout)).items():
        archive[cls] = {**size, "usd_month": _usd(archive_usd_month(config, cls, size["bytes"]))}
    queries: dict = {"available": True}
    try:
        stats = warehouse.query_history(now - days * 86_400)
        billed = sum(q.bytes_billed for q in stats)
        queries.update(jobs=len(stats), bytes_billed=billed, usd=_usd(billed / TIB * config.price_query_per_tib))
    except NotAvailableError as exc:
        queries = {"available": False, "reason": str(exc)}
    return {
        "since": since.isoformat(),
        "until": today.isoformat(),
        "days": days,
        "prices": {k.removeprefix("price_"): v for k, v in config.public().items() if k.startswith("price_")},
        "tables": tables,
        "ingestion": {
            "bqspool_batch_loads_usd": 0.0,
            "legacy_streaming_usd": _usd(streamed_bytes / MIB_200 * config.price_streaming_per_200mib),
            "storage_write_api_usd": _usd(max(0.0, write_api_bytes - free) / GIB * config.price_storage_write_per_gib),
            "events": sum(t["events"] for t in tables.values()),
        },
        "bigquery_storage": {
            "available": storage_known,
            "active_bytes": active,
            "long_term_bytes": long_term,
            "usd_month": _usd(storage_usd_month(config, active, long_term)),
        },
        "archive": archive,
        "queries": queries,
    }
