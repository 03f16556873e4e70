"""The seed's alert rules, translated to what bqspool measures.

Critical:

- ``no-data``: a table had nothing loaded for ``no_data_minutes`` while
  events for it waited (in the buffer, or shipped to the bucket) that long;
- ``error-rate``: over the window, dead-lettered events plus events in
  quarantined batches or objects, over the events appended (loaded, waiting
  and failed), above ``error_rate``;
- ``table-size``: a table over ``table_bytes``;
- ``slow-query``: a query job in the window ran over ``query_seconds``;
- ``buffer-full``: the buffer within 10% of its size cap, or events dropped
  since the last check.

- ``unreachable``: GCS or BigQuery cannot be reached (past the retry
  policy), so nothing loads; the buffer's rules are still evaluated.

Warning:

- ``delay-p95``: the p95 delay from append to loaded, over the events loaded
  in the window (from the oldest-event time in each object's name);
- ``daily-cost``: the estimated daily cost (storage, archive, queries);
- ``null-rate``: NULLs above ``null_rate`` in the columns the configuration
  names, over today's and yesterday's partitions;
- ``job-budget``: load jobs in 24 h above ``job_budget`` of the budget.

A rule the backend cannot evaluate (the emulator has no job history and
reports no table sizes) is listed as unavailable with the reason, never
silently passed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bqspool.schemas.errors import BackendUnavailableError, BqspoolError, NotAvailableError
from bqspool.schemas.registry import SchemaSet

from . import history
from .archive import archive_size, by_class
from .audit import since_filter
from .commitlog import DAY_S, Layout, LogReader, delays, events_in, status
from .commitlog import held as held_objects
from .config import Config
from .cost import TIB, archive_usd_month, storage_usd_month
from .interfaces import ObjectStore, QueryParam, QueryStat, StoredObject, TableStorage, Warehouse

log = logging.getLogger("bqspool.loader")

CRITICAL, WARNING = "critical", "warning"


@dataclass(frozen=True)
class Alert:
    rule: str
    severity: str
    table: str  # "*" for the buffer or the project
    value: float
    threshold: float
    message: str

    @property
    def key(self) -> str:
        return f"{self.rule}:{self.table}"

    def as_dict(self) -> dict:
        return {**self.__dict__, "key": self.key}


@dataclass
class Findings:
    alerts: list[Alert]
    unavailable: dict[str, str]  # rule -> why it could not be evaluated
    samples: dict[str, dict[str, float]]  # per table: backlog, loaded in the window, ... (for the page)

    @property
    def exit_code(self) -> int:
        if any(a.severity == CRITICAL for a in self.alerts):
            return 2
        return 1 if self.alerts else 0


def _p95(values: list[tuple[float, int]]) -> float | None:
    """The 95th percentile of ``(value, weight)`` pairs."""
    total = sum(w for _, w in values)
    if not total:
        return None
    rank = math.ceil(0.95 * total)
    seen = 0
    for value, weight in sorted(values):
        seen += weight
        if seen >= rank:
            return value
    return None  # pragma: no cover


class Monitor:
    """Evaluates the rules against the bucket, the warehouse and, where given, the buffer."""

    def __init__(
        self,
        config: Config,
        schemas: SchemaSet,
        store: ObjectStore | None,
        warehouse: Warehouse | None,
        buffer_path: Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.config, self.schemas = config, schemas
        self.store, self.warehouse = store, warehouse
        self.buffer_path = buffer_path if buffer_path is not None and Path(buffer_path).exists() else None
        self.layout = Layout(config.prefix)
        self.reader = LogReader(store, self.layout) if store is not None else None  # records are read once
        self.clock = clock
        self._dropped: int | None = None  # the file's drop counter at this evaluation, for the next

    # -- data ----------------------------------------------------------------------

    def _buffer_stats(self) -> dict | None:
        if self.buffer_path is None:
            return None
        from bqspool.buffer import Buffer
        from bqspool.buffer.deadletters import count_since
        from bqspool.buffer.store import connect

        from .ledger import quarantined_rows

        with Buffer(self.buffer_path, self.config.schemas, max_bytes=self.config.buffer_max_bytes) as buf:
            stats = buf.stats()
        since_us = int((self.clock() - self.config.monitor_window_minutes * 60) * 1e6)
        conn = connect(self.buffer_path)
        try:
            # Counted by SQL: reading the dead letters themselves would read their payloads.
            stats["dead_recent"] = count_since(conn, since_us)
            stats["quarantined_rows"] = quarantined_rows(conn)
        finally:
            conn.close()
        return stats

    def _loads(self, table: str, since: float, now: float, sources: bool) -> list[history.Load]:
        """The table's jobs done since ``since``; their objects only if ``sources``
        (a read per archived job, once per monitor: its reader keeps them)."""
        assert self.store is not None
        day = lambda t: dt.datetime.fromtimestamp(t, dt.UTC).date()
        found = history.loads(self.store, self.layout, table, day(since), day(now), reader=self.reader, sources=sources)
        return [ld for ld in found if ld.at >= since]

    def hourly(self, table: str, now: float) -> list[int]:
        """Events loaded into ``table`` in each of the last 24 hours, oldest first."""
        counts = [0] * 24
        if self.store is None:
            return counts
        for ld in self._loads(table, now - DAY_S, now, sources=False):
            slot = 23 - int((now - ld.at) // 3600)
            if 0 <= slot < 24:
                counts[slot] += ld.events
        return counts

    # -- the rules -----------------------------------------------------------------------

    def evaluate(self) -> Findings:
        """Every rule; if the bucket or the warehouse cannot be reached, the buffer's
        rules and one critical ``unreachable`` alert (nothing can load meanwhile)."""
        try:
            return self._evaluate()
        except BackendUnavailableError as exc:
            unavailable: dict[str, str] = {}
            alerts = self._buffer_rule(self._buffer_stats(), unavailable)
            alerts.append(
                Alert(
                    "unreachable",
                    CRITICAL,
                    "*",
                    1,
                    0,
                    f"GCS or BigQuery cannot be reached, so nothing loads: {exc}",
                )
            )
            return Findings(alerts, unavailable, {})

    def _evaluate(self) -> Findings:
        cfg, now = self.config, self.clock()
        window_s = cfg.monitor_window_minutes * 60
        alerts: list[Alert] = []
        unavailable: dict[str, str] = {}
        samples: dict[str, dict[str, float]] = {}
        buf = self._buffer_stats()
        bucket, held = None, {}
        if self.store is not None:
            held_back = held_objects(self.store, self.layout)  # one listing of each area, for both
            bucket = status(self.store, self.layout, cfg.quota_jobs_per_table_day, list(self.schemas), now, held_back)
            held = _held_since(held_back, now - window_s)
        for table in self.schemas:
            t_bucket = (bucket or {}).get("tables", {}).get(table, {})
            t_buf = (buf or {}).get("streams", {}).get(table, {})
            loads = (
                self._loads(table, now - max(window_s, cfg.monitor_no_data_minutes * 60), now, sources=True)
                if self.store
                else []
            )
            in_window = [ld for ld in loads if ld.at >= now - window_s]
            loaded = sum(ld.events for ld in in_window)
            waiting_age = max(
                (t_bucket.get("oldest_age_s") or 0) if t_bucket.get("waiting") else 0,
                (t_buf.get("oldest_age_s") or 0) if t_buf.get("pending") else 0,
            )
            last_load = max((ld.at for ld in loads), default=None)
            samples[table] = {
                "waiting_objects": t_bucket.get("waiting", 0),
                "pending_events": t_buf.get("pending", 0),
                "loaded_window": loaded,
                "jobs_24h": t_bucket.get("jobs_24h", 0),
                "budget": cfg.quota_jobs_per_table_day,
                "quarantined": t_bucket.get("quarantined", 0),
                "dead_letters": t_bucket.get("dead_letters", 0),
            }
            # no-data
            limit_s = cfg.monitor_no_data_minutes * 60
            quiet = now - last_load if last_load is not None else waiting_age
            if waiting_age >= limit_s and quiet >= limit_s:
                alerts.append(
                    Alert(
                        "no-data",
                        CRITICAL,
                        table,
                        round(quiet / 60, 1),
                        cfg.monitor_no_data_minutes,
                        f"{table}: nothing loaded for {quiet / 60:.1f} min while events wait "
                        f"(oldest {waiting_age / 60:.1f} min); threshold {cfg.monitor_no_data_minutes:g} min",
                    )
                )
            # error-rate
            failed = (
                held.get(table, 0)
                + (buf or {}).get("dead_recent", {}).get(table, 0)
                + (buf or {}).get("quarantined_rows", {}).get(table, 0)
            )
            appended = loaded + failed + t_buf.get("pending", 0)
            if failed and appended and failed / appended > cfg.monitor_error_rate:
                rate = failed / appended
                alerts.append(
                    Alert(
                        "error-rate",
                        CRITICAL,
                        table,
                        round(rate, 4),
                        cfg.monitor_error_rate,
                        f"{table}: {failed} of {appended} events dead-lettered or quarantined in the last "
                        f"{cfg.monitor_window_minutes:g} min ({rate:.1%}); threshold {cfg.monitor_error_rate:.1%}",
                    )
                )
            # delay-p95
            p95 = _p95([(max(0.0, d), w) for ld in in_window for d, w in delays(ld.sources, ld.at)])
            if p95 is not None:
                samples[table]["delay_p95_s"] = round(p95, 1)
                if p95 > cfg.monitor_delay_p95_minutes * 60:
                    alerts.append(
                        Alert(
                            "delay-p95",
                            WARNING,
                            table,
                            round(p95 / 60, 2),
                            cfg.monitor_delay_p95_minutes,
                            f"{table}: p95 delay from append to loaded {p95 / 60:.1f} min over the last "
                            f"{cfg.monitor_window_minutes:g} min; threshold {cfg.monitor_delay_p95_minutes:g} min",
                        )
                    )
            # job-budget
            used = t_bucket.get("jobs_24h", 0) / max(1, cfg.quota_jobs_per_table_day)
            if t_bucket and used > cfg.monitor_job_budget:
                alerts.append(
                    Alert(
                        "job-budget",
                        WARNING,
                        table,
                        round(used, 3),
                        cfg.monitor_job_budget,
                        f"{table}: {t_bucket['jobs_24h']} of {cfg.quota_jobs_per_table_day} load jobs used in "
                        f"24 h ({used:.0%}); threshold {cfg.monitor_job_budget:.0%}",
                    )
                )
        alerts += self._buffer_rule(buf, unavailable)
        if self.warehouse is not None:
            # Each read once a cycle, for the rules that use it.
            stored = {t: self.warehouse.table_storage(t) for t in self.schemas}
            archived = archive_size(self.store, self.layout) if self.store is not None else {}
            try:
                queries: list[QueryStat] | None = self.warehouse.query_history(now - max(DAY_S, window_s))
            except NotAvailableError as exc:
                queries, unavailable["slow-query"] = None, str(exc)
            alerts += self._table_sizes(stored, archived, unavailable)
            if queries is not None:
                alerts += self._slow_queries([q for q in queries if q.started >= now - window_s])
            alerts += self._null_rates(now, unavailable)
            alerts += self._daily_cost(now, stored, archived, queries, unavailable)
        return Findings(alerts, unavailable, samples)

    def _buffer_rule(self, buf: dict | None, unavailable: dict[str, str]) -> list[Alert]:
        if buf is None:
            unavailable["buffer-full"] = "no buffer on this host"
            return []
        out = []
        state = self.previous_state()
        dropped_before = state.get("dropped")
        if dropped_before is not None and buf["dropped"] > dropped_before:
            n = buf["dropped"] - dropped_before
            out.append(
                Alert("buffer-full", CRITICAL, "*", n, 0, f"buffer: {n} events dropped since the last check (size cap)")
            )
        elif buf.get("max_bytes"):
            used = (buf["pending_bytes"] + buf.get("dead_bytes", 0)) / buf["max_bytes"]
            if used >= self.config.monitor_buffer_full:
                out.append(
                    Alert(
                        "buffer-full",
                        CRITICAL,
                        "*",
                        round(used, 3),
                        self.config.monitor_buffer_full,
                        f"buffer: {used:.0%} of its {buf['max_bytes']}-byte cap used; "
                        f"threshold {self.config.monitor_buffer_full:.0%}",
                    )
                )
        self._dropped = buf["dropped"]
        return out

    def _table_sizes(
        self, stored: dict[str, TableStorage | None], archived: dict, unavailable: dict[str, str]
    ) -> list[Alert]:
        out = []
        for table, size in stored.items():
            if size is None:
                continue
            if size.total_bytes == 0:
                # The emulator reports 0 bytes for every table: say so once one holds rows.
                if size.rows or table in archived:
                    unavailable["table-size"] = "the warehouse reports no table sizes (0 bytes for tables with rows)"
                continue
            if size.total_bytes > self.config.monitor_table_bytes:
                out.append(
                    Alert(
                        "table-size",
                        CRITICAL,
                        table,
                        size.total_bytes,
                        self.config.monitor_table_bytes,
                        f"{table}: {size.total_bytes / TIB:.2f} TiB; threshold "
                        f"{self.config.monitor_table_bytes / TIB:.2f} TiB",
                    )
                )
        return out

    def _slow_queries(self, stats: list[QueryStat]) -> list[Alert]:
        slow = [q for q in stats if q.seconds > self.config.monitor_query_seconds]
        if not slow:
            return []
        worst = max(slow, key=lambda q: q.seconds)
        return [
            Alert(
                "slow-query",
                CRITICAL,
                "*",
                round(worst.seconds, 1),
                self.config.monitor_query_seconds,
                f"query job {worst.job_id} ran {worst.seconds:.0f} s ({len(slow)} over the threshold in the window); "
                f"threshold {self.config.monitor_query_seconds:g} s",
            )
        ]

    def _null_rates(self, now: float, unavailable: dict[str, str]) -> list[Alert]:
        assert self.warehouse is not None
        out: list[Alert] = []
        since = dt.datetime.fromtimestamp(now, dt.UTC).date() - dt.timedelta(days=1)
        for item in filter(None, (c.strip() for c in (self.config.monitor_null_columns or "").split(","))):
            table, _, column = item.partition(".")
            if table not in self.schemas or not column:
                unavailable[f"null-rate:{item}"] = "name it as TABLE.COLUMN of the schema set"
                continue
            where = since_filter(self.schemas[table])
            try:
                (row,) = self.warehouse.query(
                    f"SELECT COUNT(*) AS n, COUNTIF(`{column}` IS NULL) AS nulls FROM `{table}` WHERE {where}",
                    [QueryParam("since", "DATE", since)],
                )
            except NotAvailableError as exc:
                unavailable["null-rate"] = str(exc)
                return out
            except BqspoolError as exc:
                unavailable[f"null-rate:{item}"] = f"cannot count: {exc}"
                continue
            n, nulls = int(row["n"]), int(row["nulls"])
            if n and nulls / n > self.config.monitor_null_rate:
                out.append(
                    Alert(
                        "null-rate",
                        WARNING,
                        table,
                        round(nulls / n, 4),
                        self.config.monitor_null_rate,
                        f"{table}.{column}: {nulls} of {n} rows NULL since {since} ({nulls / n:.1%}); "
                        f"threshold {self.config.monitor_null_rate:.1%}",
                    )
                )
        return out

    def _daily_cost(
        self,
        now: float,
        stored: dict[str, TableStorage | None],
        archived: dict,
        queries: list[QueryStat] | None,
        unavailable: dict[str, str],
    ) -> list[Alert]:
        cfg = self.config
        usd = sum(storage_usd_month(cfg, s.active_bytes, s.long_term_bytes) for s in stored.values() if s) / 30
        usd += sum(archive_usd_month(cfg, cls, size["bytes"]) for cls, size in by_class(archived).items()) / 30
        if queries is None:
            unavailable["daily-cost"] = "query cost is not available here: storage and the archive only"
        else:
            usd += sum(q.bytes_billed for q in queries if q.started >= now - DAY_S) / TIB * cfg.price_query_per_tib
        if usd > cfg.monitor_daily_cost_usd:
            return [
                Alert(
                    "daily-cost",
                    WARNING,
                    "*",
                    round(usd, 6),
                    cfg.monitor_daily_cost_usd,
                    f"estimated daily cost ${usd:.2f} (storage, archive, queries); "
                    f"threshold ${cfg.monitor_daily_cost_usd:g}",
                )
            ]
        return []

    # -- state -------------------------------------------------------------------------

    def previous_state(self) -> dict:
        return load_state(Path(self.config.monitor_state))


def _held_since(held_back: dict[str, dict[str, list[StoredObject]]], since: float) -> dict[str, int]:
    """Events dead-lettered or quarantined in the bucket since ``since``, per table (see ``commitlog.held``)."""
    out: dict[str, int] = {}
    for per_table in held_back.values():
        for table, objs in per_table.items():
            n = sum(events_in(o.name) or 1 for o in objs if o.name.endswith(".parquet") and o.created >= since)
            if n:
                out[table] = out.get(table, 0) + n
    return out


def load_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two monitors never share a temporary file
    tmp.write_text(json.dumps(state, sort_keys=True))
    tmp.replace(path)


def history_points(state: dict, findings: Findings, now: float, keep_s: float = DAY_S) -> list[dict]:
    """The page's 24 h of samples: the previous ones, plus this evaluation's."""
    points = [p for p in state.get("history", []) if p["t"] >= now - keep_s]
    points.append({"t": now, "tables": findings.samples})
    return points[-2000:]
