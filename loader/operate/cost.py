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

from ..config import Config
from ..interfaces import ObjectStore, Warehouse
from ..layout import Layout
from . import history
from .archive import archive_size, by_class

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


def _table(
    store: ObjectStore, warehouse: Warehouse, layout: Layout, name: str, since: dt.date, today: dt.date
) -> tuple[dict[str, Any], float]:
    """One table's loads and storage, and its bytes per row (warehouse's, else Parquet's)."""
    found = history.loads(store, layout, name, since, today)
    events = sum(ld.events for ld in found)
    parquet = sum(ld.bytes for ld in found)
    stored = warehouse.table_storage(name)
    reported = stored is not None and stored.rows > 0 and stored.total_bytes > 0
    row_bytes = (stored.total_bytes / stored.rows) if reported and stored else (parquet / events if events else 0)
    return {
        "jobs": len(found),
        "events": events,
        "parquet_bytes": parquet,
        "row_bytes": round(row_bytes, 1),
        "row_bytes_from": "warehouse" if reported else "parquet (a lower bound)",
        "per_day": history.per_day(found),
        "storage": None
        if stored is None
        else {"rows": stored.rows, "active_bytes": stored.active_bytes, "long_term_bytes": stored.long_term_bytes},
        "storage_reported": reported,
    }, row_bytes


def _queries(warehouse: Warehouse, config: Config, since: float) -> dict:
    try:
        stats = warehouse.query_history(since)
    except NotAvailableError as exc:
        return {"available": False, "reason": str(exc)}
    billed = sum(q.bytes_billed for q in stats)
    return {
        "available": True,
        "jobs": len(stats),
        "bytes_billed": billed,
        "usd": _usd(billed / TIB * config.price_query_per_tib),
    }


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
    for name in schemas:
        tables[name], row_bytes = _table(store, warehouse, layout, name, since, today)
        streamed_bytes += tables[name]["events"] * max(row_bytes, MIN_STREAMED_ROW)
        write_api_bytes += tables[name]["events"] * row_bytes
    reported = {name: t.pop("storage_reported") for name, t in tables.items()}
    storage_known = all(reported[n] or t["storage"] is None or not t["events"] for n, t in tables.items())
    free = config.price_storage_write_free_tib * TIB * days / 30.0
    active = sum(t["storage"]["active_bytes"] for t in tables.values() if t["storage"])
    long_term = sum(t["storage"]["long_term_bytes"] for t in tables.values() if t["storage"])
    archive = {
        cls: {**size, "usd_month": _usd(archive_usd_month(config, cls, size["bytes"]))}
        for cls, size in by_class(archive_size(store, layout)).items()
    }
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
        "queries": _queries(warehouse, config, now - days * 86_400),
    }
