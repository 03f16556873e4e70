"""What bqspool's data costs, from what it loaded, what it spent, and what the warehouse and the bucket hold.

Ingestion is what bqspool's own path costs: batch load jobs are free, but
every request to Cloud Storage is billed by class, and each ship and each
commit records what it sent in the commit log (:mod:`bqspool.loader.billing`):
the summaries' metadata, read from listings alone (:mod:`.history`). Beside
them, the staging area's storage, the archive's storage over the window,
and each archive file's lifecycle move to COLDLINE (a class A operation of
that class). Against it, what the same rows would have cost through legacy
streaming inserts (each row billed as at least 1 KB), the Storage Write API
(a monthly free amount, prorated to the window) and a Pub/Sub BigQuery
subscription (publishing and the subscription's writes, each per TiB).

Row sizes are the warehouse's logical bytes per row where it reports them;
otherwise the Parquet bytes per event, a lower bound, and the report says
which. BigQuery storage is priced per month from the tables' sizes now;
queries from the warehouse's job history where it keeps one. Prices come
from the configuration.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bqspool.schemas.errors import NotAvailableError
from bqspool.schemas.registry import SchemaSet

from .. import billing
from ..config import Config
from ..interfaces import ObjectStore, StoredObject, Warehouse
from ..layout import Layout
from . import history
from .archive import archive_files, archive_sizes, by_class

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


def operations(config: Config, ops: dict[str, int]) -> dict[str, Any]:
    """``{"class_a", "class_b", "usd"}`` of some requests, at the configured prices."""
    c = billing.by_class(ops)
    usd = billing.usd(ops, config.price_gcs_class_a_per_1000, config.price_gcs_class_b_per_1000)
    return {"class_a": c["class_a"], "class_b": c["class_b"], "usd": _usd(usd)}


def _table(
    store: ObjectStore, warehouse: Warehouse, layout: Layout, config: Config, name: str, since: dt.date, today: dt.date
) -> tuple[dict[str, Any], float]:
    """One table's loads, requests and storage, and its bytes per row (warehouse's, else Parquet's)."""
    scanned = history.scan(store, layout, name, since, today)
    found = scanned.loads
    spent: dict[str, int] = {}
    for ops in scanned.spent.values():
        billing.add_ops(spent, ops)
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
        "storage_operations": {**operations(config, spent), "by_operation": spent},
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
    own = [q for q in stats if q.role]  # found by bqspool's labels (loader/labels.py)
    roles = sorted({q.role for q in own if q.role})
    return {
        "available": True,
        "jobs": len(stats),
        "bytes_billed": billed,
        "usd": _usd(billed / TIB * config.price_query_per_tib),
        "bqspool": {
            "jobs": len(own),
            "bytes_billed": sum(q.bytes_billed for q in own),
            "usd": _usd(sum(q.bytes_billed for q in own) / TIB * config.price_query_per_tib),
            "by_role": {r: sum(1 for q in own if q.role == r) for r in roles},
        },
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
    row_bytes: dict[str, float] = {}
    for name in schemas:
        tables[name], row_bytes[name] = _table(store, warehouse, layout, config, name, since, today)
    reported = {name: t.pop("storage_reported") for name, t in tables.items()}
    storage_known = all(reported[n] or t["storage"] is None or not t["events"] for n, t in tables.items())
    active = sum(t["storage"]["active_bytes"] for t in tables.values() if t["storage"])
    long_term = sum(t["storage"]["long_term_bytes"] for t in tables.values() if t["storage"])
    archived = archive_files(store, layout)
    archive = {
        cls: {**size, "usd_month": _usd(archive_usd_month(config, cls, size["bytes"]))}
        for cls, size in by_class(archive_sizes(archived, layout)).items()
    }
    return {
        "since": since.isoformat(),
        "until": today.isoformat(),
        "days": days,
        "prices": {k.removeprefix("price_"): v for k, v in config.public().items() if k.startswith("price_")},
        "tables": tables,
        "ingestion": ingestion(store, layout, config, tables, row_bytes, archive, archived, days, since),
        "bigquery_storage": {
            "available": storage_known,
            "active_bytes": active,
            "long_term_bytes": long_term,
            "usd_month": _usd(storage_usd_month(config, active, long_term)),
        },
        "archive": archive,
        "queries": _queries(warehouse, config, now - days * 86_400),
    }


def ingestion(
    store: ObjectStore,
    layout: Layout,
    config: Config,
    tables: dict[str, dict[str, Any]],
    row_bytes: dict[str, float],
    archive: dict[str, dict[str, Any]],
    archived: list[StoredObject],
    days: int,
    since: dt.date,
) -> dict[str, Any]:
    """What bqspool's path cost over the window, item by item, and the alternatives for the same rows."""
    spent: dict[str, int] = {}
    for t in tables.values():
        billing.add_ops(spent, t["storage_operations"]["by_operation"])
    ops = operations(config, spent)
    staged = sum(o.size for o in store.list_objects(layout.staged()))
    staging = staged / GIB * config.price_gcs_standard_gib_month * days / 30
    archive_usd = sum(a["usd_month"] for a in archive.values()) * days / 30
    start = dt.datetime.combine(since, dt.time(), dt.UTC).timestamp()
    moved = sum(1 for o in archived if o.created >= start) if config.archive_coldline_days else 0
    transitions = moved / 1000 * config.price_gcs_coldline_class_a_per_1000
    total = ops["usd"] + staging + archive_usd + transitions
    events = sum(t["events"] for t in tables.values())
    alternatives = _alternatives(config, tables, row_bytes, days)
    return {
        "events": events,
        "storage_operations": ops,
        "staging_storage_usd": _usd(staging),
        "archive_storage_usd": _usd(archive_usd),
        "lifecycle_transitions": {"files": moved, "usd": _usd(transitions)},
        "bqspool_batch_loads_usd": _usd(total),
        **alternatives,
        "ratio": {k.removesuffix("_usd"): (round(total / v, 4) if v else None) for k, v in alternatives.items()},
    }


def _alternatives(
    config: Config, tables: dict[str, dict[str, Any]], row_bytes: dict[str, float], days: int
) -> dict[str, float]:
    """What legacy streaming, the Storage Write API and a Pub/Sub BigQuery subscription
    would have cost for the same rows."""
    streamed = sum(t["events"] * max(row_bytes[n], MIN_STREAMED_ROW) for n, t in tables.items())
    written = sum(t["events"] * row_bytes[n] for n, t in tables.items())
    free = config.price_storage_write_free_tib * TIB * days / 30.0
    pubsub = config.price_pubsub_throughput_per_tib + config.price_pubsub_bigquery_per_tib
    return {
        "legacy_streaming_usd": _usd(streamed / MIB_200 * config.price_streaming_per_200mib),
        "storage_write_api_usd": _usd(max(0.0, written - free) / GIB * config.price_storage_write_per_gib),
        "pubsub_bigquery_subscription_usd": _usd(written / TIB * pubsub),
    }
