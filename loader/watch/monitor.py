"""The monitor: gathers what the alert rules read, and evaluates them (see :mod:`.rules`).

Per table it reads the bucket (objects waiting, load jobs against the
budget, what is held back), the commit log (what was loaded, when, and
with what delay) and, where given, this host's buffer; then the warehouse
(table sizes, query history, NULL counts). A rule the backend cannot
evaluate (the emulator has no job history and reports no table sizes) is
listed as unavailable with the reason, never silently passed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path

from bqspool.schemas.errors import BackendUnavailableError, BqspoolError, NotAvailableError
from bqspool.schemas.registry import SchemaSet

from ..billing import add_ops
from ..billing import usd as billing_usd
from ..commit.commitlog import DAY_S, LogReader, delays
from ..config import Config
from ..interfaces import ObjectStore, QueryParam, QueryStat, TableStorage, Warehouse
from ..layout import Layout, events_in
from ..operate import history
from ..operate.archive import archive_size, by_class
from ..operate.audit import since_filter
from ..operate.cost import TIB, archive_usd_month, storage_usd_month
from ..operate.status import HeldByArea, commit_status, held_by_area
from . import rules
from .rules import CRITICAL, Alert, Findings, TableFacts

log = logging.getLogger("bqspool.loader")


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

    # -- data ----------------------------------------------------------------------

    def _buffer_stats(self) -> dict | None:
        if self.buffer_path is None:
            return None
        from bqspool.buffer import Buffer
        from bqspool.buffer.rows import dead_count_since
        from bqspool.buffer.store import connect

        from ..ship.ledger import quarantined_rows

        with Buffer(self.buffer_path, self.config.schemas, max_bytes=self.config.buffer_max_bytes) as buf:
            stats = buf.stats()
        since_us = int((self.clock() - self.config.monitor_window_minutes * 60) * 1e6)
        conn = connect(self.buffer_path)
        try:
            # Counted by SQL: reading the dead letters themselves would read their payloads.
            stats["dead_recent"] = dead_count_since(conn, since_us)
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

    def page_figures(self, findings: Findings) -> dict:
        """The status page's figures per table, from one evaluation's samples."""
        now = self.clock()
        tables = {
            table: {
                "backlog": s["waiting_objects"] + s["pending_events"],
                "hourly": self.hourly(table, now),
                "jobs_24h": s["jobs_24h"],
                "budget": s["budget"],
                "quarantined": s["quarantined"],
                "dead_letters": s["dead_letters"],
                **{
                    k: s.get(k)
                    for k in ("loaded_window", "failed_window", "pending_events", "last_load_age_s", "waiting_age_s")
                },
                "delay_p95_s": s.get("delay_p95_s"),
            }
            for table, s in findings.samples.items()
        }
        dataset = f"{self.config.project}.{self.config.dataset}"
        return {"tables": tables, "dataset": dataset, "buffer": findings.buffer}

    # -- the rules -----------------------------------------------------------------------

    def evaluate(self, previous: dict | None = None) -> Findings:
        """Every rule, given the last cycle's state (``previous``: for the drops
        since the last check); if the bucket or the warehouse cannot be reached,
        the buffer's rules and one critical ``unreachable`` alert (nothing can
        load meanwhile)."""
        previous = previous or {}
        try:
            return self._evaluate(previous)
        except BackendUnavailableError as exc:
            unavailable: dict[str, str] = {}
            buf = self._buffer_stats()
            alerts = self._buffer_rule(buf, previous, unavailable)
            alerts.append(
                Alert("unreachable", CRITICAL, "*", 1, 0, f"GCS or BigQuery cannot be reached, so nothing loads: {exc}")
            )
            return Findings(alerts, unavailable, {}, buf["dropped"] if buf else None)

    def _evaluate(self, previous: dict) -> Findings:
        cfg, now = self.config, self.clock()
        unavailable: dict[str, str] = {}
        samples: dict[str, dict[str, float]] = {}
        buf = self._buffer_stats()
        bucket, held = None, {}
        if self.store is not None:
            held_back = held_by_area(self.store, self.layout)  # one listing of each area, for both
            bucket = commit_status(
                self.store, self.layout, cfg.quota_jobs_per_table_day, list(self.schemas), now, held_back
            )
            held = _held_since(held_back, now - cfg.monitor_window_minutes * 60)
        alerts: list[Alert] = []
        for table in self.schemas:
            facts, samples[table] = self._table_facts(table, now, buf, bucket, held)
            p95 = rules.p95([(max(0.0, d), w) for d, w in facts.delays])
            if p95 is not None:
                samples[table]["delay_p95_s"] = round(p95, 1)
            found = (
                rules.no_data(facts, cfg),
                rules.error_rate(facts, cfg),
                rules.delay_p95(facts, cfg, p95),
                rules.job_budget(facts, cfg),
            )
            alerts += [a for a in found if a is not None]
        alerts += self._buffer_rule(buf, previous, unavailable)
        if self.warehouse is not None:
            alerts += self._warehouse_rules(now, unavailable)
        return Findings(alerts, unavailable, samples, buf["dropped"] if buf else None, _buffer_figures(buf))

    def _table_facts(
        self, table: str, now: float, buf: dict | None, bucket: dict | None, held: dict[str, int]
    ) -> tuple[TableFacts, dict[str, float]]:
        """What the rules read of ``table``, and its sample for the page."""
        cfg = self.config
        window_s = cfg.monitor_window_minutes * 60
        t_bucket = (bucket or {}).get("tables", {}).get(table, {})
        t_buf = (buf or {}).get("streams", {}).get(table, {})
        since = now - max(window_s, cfg.monitor_no_data_minutes * 60)
        loads = self._loads(table, since, now, sources=True) if self.store else []
        in_window = [ld for ld in loads if ld.at >= now - window_s]
        waiting_age = max(
            (t_bucket.get("oldest_age_s") or 0) if t_bucket.get("waiting") else 0,
            (t_buf.get("oldest_age_s") or 0) if t_buf.get("pending") else 0,
        )
        last_load = max((ld.at for ld in loads), default=None)
        failed = (
            held.get(table, 0)
            + (buf or {}).get("dead_recent", {}).get(table, 0)
            + (buf or {}).get("quarantined_rows", {}).get(table, 0)
        )
        facts = TableFacts(
            table,
            loaded=sum(ld.events for ld in in_window),
            quiet_s=now - last_load if last_load is not None else waiting_age,
            waiting_age_s=waiting_age,
            failed=failed,
            pending=t_buf.get("pending", 0),
            delays=[dw for ld in in_window for dw in delays(ld.sources, ld.at)],
            jobs_24h=t_bucket.get("jobs_24h", 0) if t_bucket else None,
        )
        sample = {
            "waiting_objects": t_bucket.get("waiting", 0),
            "pending_events": t_buf.get("pending", 0),
            "loaded_window": facts.loaded,
            "failed_window": failed,
            "last_load_age_s": round(now - last_load, 1) if last_load is not None else None,
            "waiting_age_s": round(waiting_age, 1),
            "jobs_24h": t_bucket.get("jobs_24h", 0),
            "budget": cfg.quota_jobs_per_table_day,
            "quarantined": t_bucket.get("quarantined", 0),
            "dead_letters": t_bucket.get("dead_letters", 0),
        }
        return facts, sample

    def _buffer_rule(self, buf: dict | None, previous: dict, unavailable: dict[str, str]) -> list[Alert]:
        if buf is None:
            unavailable["buffer-full"] = "no buffer on this host"
            return []
        found = rules.buffer_full(buf, previous.get("dropped"), self.config)
        return [found] if found is not None else []

    def _warehouse_rules(self, now: float, unavailable: dict[str, str]) -> list[Alert]:
        """Table sizes, slow queries, NULL rates and the daily cost: each read once a cycle."""
        assert self.warehouse is not None
        window_s = self.config.monitor_window_minutes * 60
        stored = {t: self.warehouse.table_storage(t) for t in self.schemas}
        archived = archive_size(self.store, self.layout) if self.store is not None else {}
        try:
            queries: list[QueryStat] | None = self.warehouse.query_history(now - max(DAY_S, window_s))
        except NotAvailableError as exc:
            queries, unavailable["slow-query"] = None, str(exc)
        for table, size in stored.items():
            # The emulator reports 0 bytes for every table: say so once one holds rows.
            if size is not None and size.total_bytes == 0 and (size.rows or table in archived):
                unavailable["table-size"] = "the warehouse reports no table sizes (0 bytes for tables with rows)"
        alerts = rules.table_sizes(stored, self.config)
        if queries is not None:
            slow = rules.slow_queries([q for q in queries if q.started >= now - window_s], self.config)
            alerts += [slow] if slow else []
        alerts += self._null_rates(now, unavailable)
        cost = rules.daily_cost(self._daily_usd(now, stored, archived, queries, unavailable), self.config)
        return alerts + ([cost] if cost else [])

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
            found = rules.null_rate(table, column, int(row["n"]), int(row["nulls"]), since, self.config)
            out += [found] if found else []
        return out

    def _daily_usd(
        self,
        now: float,
        stored: dict[str, TableStorage | None],
        archived: dict,
        queries: list[QueryStat] | None,
        unavailable: dict[str, str],
    ) -> float:
        cfg = self.config
        usd = sum(storage_usd_month(cfg, s.active_bytes, s.long_term_bytes) for s in stored.values() if s) / 30
        usd += sum(archive_usd_month(cfg, cls, size["bytes"]) for cls, size in by_class(archived).items()) / 30
        if self.store is not None:  # the requests the last 24 h's loads recorded (their summaries)
            spent: dict[str, int] = {}
            for table in self.schemas:
                for ld in self._loads(table, now - DAY_S, now, sources=False):
                    add_ops(spent, ld.ops)
            usd += billing_usd(spent, cfg.price_gcs_class_a_per_1000, cfg.price_gcs_class_b_per_1000)
        if queries is None:
            unavailable["daily-cost"] = "query cost is not available here: storage, the archive and requests only"
        else:
            usd += sum(q.bytes_billed for q in queries if q.started >= now - DAY_S) / TIB * cfg.price_query_per_tib
        return usd


def _held_since(held_back: HeldByArea, since: float) -> dict[str, int]:
    """Events dead-lettered or quarantined in the bucket since ``since``, per table."""
    out: dict[str, int] = {}
    for per_table in held_back.values():
        for table, objs in per_table.items():
            n = sum(events_in(o.name) or 1 for o in objs if o.name.endswith(".parquet") and o.created >= since)
            if n:
                out[table] = out.get(table, 0) + n
    return out


def _buffer_figures(buf: dict | None) -> dict | None:
    """This host's buffer for the page: the figures `bqspool status --json` shows."""
    if buf is None:
        return None
    keys = ("path", "pending", "pending_bytes", "dead_letters", "dropped", "lost", "file_bytes")
    return {k: buf.get(k) for k in keys}
