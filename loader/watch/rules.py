"""The seed's alert rules, translated to what bqspool measures: one function per rule.

Critical:

- ``no-data``: a table had nothing loaded for ``no_data_minutes`` while
  events for it waited (in the buffer, or shipped to the bucket) that long;
- ``error-rate``: over the window, dead-lettered events plus events in
  quarantined batches or objects, over the events appended (loaded, waiting
  and failed), above ``error_rate``;
- ``table-size``: a table over ``table_bytes``;
- ``slow-query``: a query job in the window ran over ``query_seconds``;
- ``buffer-full``: the buffer within 10% of its size cap, or events dropped
  since the last check;
- ``unreachable``: GCS or BigQuery cannot be reached (past the retry
  policy), so nothing loads; the buffer's rules are still evaluated.

Warning:

- ``delay-p95``: the p95 delay from append to loaded, over the events loaded
  in the window (from the oldest-event time in each object's name);
- ``daily-cost``: the estimated daily cost (storage, archive, queries);
- ``null-rate``: NULLs above ``null_rate`` in the columns the configuration
  names, over today's and yesterday's partitions;
- ``job-budget``: load jobs in 24 h above ``job_budget`` of the budget.

A rule the backend cannot evaluate is listed as unavailable with the
reason by the monitor (:mod:`.monitor`), which gathers what the rules read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .. import exit_codes
from ..config import Config
from ..interfaces import QueryStat, TableStorage
from ..operate.cost import TIB

Severity = Literal["critical", "warning"]
CRITICAL: Severity = "critical"
WARNING: Severity = "warning"


@dataclass(frozen=True)
class Alert:
    rule: str
    severity: Severity
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
    dropped: int | None = None  # the buffer's drop counter seen by this evaluation, for the next
    buffer: dict | None = None  # this host's buffer as `bqspool status` shows it (pending, dead letters, ...)

    @property
    def exit_code(self) -> int:
        if any(a.severity == CRITICAL for a in self.alerts):
            return exit_codes.CRITICAL
        return exit_codes.WARNING if self.alerts else exit_codes.OK


@dataclass(frozen=True)
class TableFacts:
    """What the per-table rules read of one table in one evaluation."""

    table: str
    loaded: int  # events loaded in the window
    quiet_s: float  # since the last load, or how long events have waited if none
    waiting_age_s: float  # the oldest waiting event's (buffer) or object's (bucket) age
    failed: int  # dead-lettered or quarantined in the window
    pending: int  # events in this host's buffer
    delays: list[tuple[float, int]]  # (append-to-loaded seconds, events) of the window's loads
    jobs_24h: int | None  # None: the bucket was not read


def p95(values: list[tuple[float, int]]) -> float | None:
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


def no_data(t: TableFacts, cfg: Config) -> Alert | None:
    limit_s = cfg.monitor_no_data_minutes * 60
    if t.waiting_age_s < limit_s or t.quiet_s < limit_s:
        return None
    return Alert(
        "no-data",
        CRITICAL,
        t.table,
        round(t.quiet_s / 60, 1),
        cfg.monitor_no_data_minutes,
        f"{t.table}: nothing loaded for {t.quiet_s / 60:.1f} min while events wait "
        f"(oldest {t.waiting_age_s / 60:.1f} min); threshold {cfg.monitor_no_data_minutes:g} min",
    )


def error_rate(t: TableFacts, cfg: Config) -> Alert | None:
    appended = t.loaded + t.failed + t.pending
    if not t.failed or not appended or t.failed / appended <= cfg.monitor_error_rate:
        return None
    rate = t.failed / appended
    return Alert(
        "error-rate",
        CRITICAL,
        t.table,
        round(rate, 4),
        cfg.monitor_error_rate,
        f"{t.table}: {t.failed} of {appended} events dead-lettered or quarantined in the last "
        f"{cfg.monitor_window_minutes:g} min ({rate:.1%}); threshold {cfg.monitor_error_rate:.1%}",
    )


def delay_p95(t: TableFacts, cfg: Config, p95_s: float | None) -> Alert | None:
    if p95_s is None or p95_s <= cfg.monitor_delay_p95_minutes * 60:
        return None
    return Alert(
        "delay-p95",
        WARNING,
        t.table,
        round(p95_s / 60, 2),
        cfg.monitor_delay_p95_minutes,
        f"{t.table}: p95 delay from append to loaded {p95_s / 60:.1f} min over the last "
        f"{cfg.monitor_window_minutes:g} min; threshold {cfg.monitor_delay_p95_minutes:g} min",
    )


def job_budget(t: TableFacts, cfg: Config) -> Alert | None:
    if t.jobs_24h is None:
        return None
    used = t.jobs_24h / max(1, cfg.quota_jobs_per_table_day)
    if used <= cfg.monitor_job_budget:
        return None
    return Alert(
        "job-budget",
        WARNING,
        t.table,
        round(used, 3),
        cfg.monitor_job_budget,
        f"{t.table}: {t.jobs_24h} of {cfg.quota_jobs_per_table_day} load jobs used in "
        f"24 h ({used:.0%}); threshold {cfg.monitor_job_budget:.0%}",
    )


def buffer_full(buf: dict, dropped_before: int | None, cfg: Config) -> Alert | None:
    """Events dropped since the last check, or the buffer near its cap."""
    if dropped_before is not None and buf["dropped"] > dropped_before:
        n = buf["dropped"] - dropped_before
        return Alert("buffer-full", CRITICAL, "*", n, 0, f"buffer: {n} events dropped since the last check (size cap)")
    if not buf.get("max_bytes"):
        return None
    used = (buf["pending_bytes"] + buf.get("dead_bytes", 0)) / buf["max_bytes"]
    if used < cfg.monitor_buffer_full:
        return None
    return Alert(
        "buffer-full",
        CRITICAL,
        "*",
        round(used, 3),
        cfg.monitor_buffer_full,
        f"buffer: {used:.0%} of its {buf['max_bytes']}-byte cap used; threshold {cfg.monitor_buffer_full:.0%}",
    )


def table_sizes(stored: dict[str, TableStorage | None], cfg: Config) -> list[Alert]:
    return [
        Alert(
            "table-size",
            CRITICAL,
            table,
            size.total_bytes,
            cfg.monitor_table_bytes,
            f"{table}: {size.total_bytes / TIB:.2f} TiB; threshold {cfg.monitor_table_bytes / TIB:.2f} TiB",
        )
        for table, size in stored.items()
        if size is not None and size.total_bytes > cfg.monitor_table_bytes
    ]


def slow_queries(stats: list[QueryStat], cfg: Config) -> Alert | None:
    slow = [q for q in stats if q.seconds > cfg.monitor_query_seconds]
    if not slow:
        return None
    worst = max(slow, key=lambda q: q.seconds)
    whose = f"bqspool's own {worst.role} job" if worst.role else "query job"
    return Alert(
        "slow-query",
        CRITICAL,
        "*",
        round(worst.seconds, 1),
        cfg.monitor_query_seconds,
        f"{whose} {worst.job_id} ran {worst.seconds:.0f} s ({len(slow)} over the threshold in the window); "
        f"threshold {cfg.monitor_query_seconds:g} s",
    )


def null_rate(table: str, column: str, n: int, nulls: int, since: object, cfg: Config) -> Alert | None:
    if not n or nulls / n <= cfg.monitor_null_rate:
        return None
    return Alert(
        "null-rate",
        WARNING,
        table,
        round(nulls / n, 4),
        cfg.monitor_null_rate,
        f"{table}.{column}: {nulls} of {n} rows NULL since {since} ({nulls / n:.1%}); "
        f"threshold {cfg.monitor_null_rate:.1%}",
    )


def daily_cost(usd: float, cfg: Config) -> Alert | None:
    if usd <= cfg.monitor_daily_cost_usd:
        return None
    return Alert(
        "daily-cost",
        WARNING,
        "*",
        round(usd, 6),
        cfg.monitor_daily_cost_usd,
        f"estimated daily cost ${usd:.2f} (storage, archive, queries); threshold ${cfg.monitor_daily_cost_usd:g}",
    )
