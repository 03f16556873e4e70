"""The load-job budget and pacing of a table, counted from the commit log.

BigQuery allows 1,500 load jobs per table per day, failed ones included,
and about 5 table updates per 10 s. Both are counted from the commit log's
records (live and archived), so they hold across committers, hosts and
restarts: every record is a job, whoever wrote it. Near the budget, more
objects go into each job (up to the warehouse's limit); at it, nothing new
is written and the commit says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .. import billing
from ..interfaces import WarehouseLimits
from ..layout import is_table_name
from ..settings import Settings
from .commitlog import DAY_S, LogReader, TableLog
from .report import CommitReport

NEAR_QUOTA = 0.8  # of the budget used: from here on, as many objects per job as the warehouse takes
PACE_WINDOW_S = 10.0  # the warehouse's limits.jobs_per_table_10s are per this window


@dataclass(frozen=True)
class Allowance:
    """How many of the jobs asked for may start now, and why the rest wait."""

    jobs: int
    wait: float  # > 0 when pacing holds some back: seconds until one more may start
    over_budget: int  # jobs the daily budget holds back


class Budget:
    """The configured budget and pacing, capped by the warehouse's limits."""

    def __init__(self, settings: Settings, limits: WarehouseLimits, reader: LogReader, clock: Callable[[], float]):
        self.quota = min(settings.jobs_per_table_day, limits.jobs_per_table_day)
        self.per_job = min(settings.per_job, limits.uris_per_job)
        self.max_per_job = limits.uris_per_job
        self.pace_jobs = settings.jobs_per_table_10s or limits.jobs_per_table_10s
        self.reader, self.clock = reader, clock

    def used(self, table: str, tlog: TableLog) -> list[float]:
        """Creation times of the table's jobs in the last 24 h (see ``LogReader.jobs_since``)."""
        now = self.clock()
        return self.reader.jobs_since(table, now - DAY_S, tlog, now)

    def count(self, tables: list[str], logs: dict[str, TableLog], report: CommitReport) -> None:
        """Each table's jobs in 24 h into ``report``'s ``jobs_24h``, where the commit did not count them already."""
        for table in tables:
            if is_table_name(table) and "jobs_24h" not in report.per_table.get(table, {}):
                with billing.spending(table):
                    report.table(table)["jobs_24h"] = len(self.used(table, logs.get(table) or TableLog()))

    def objects_per_job(self, used: int) -> int:
        """Objects per job: the configured number, or as many as the warehouse takes near the budget."""
        return self.max_per_job if self.near(used) else self.per_job

    def near(self, used: int) -> bool:
        return used >= NEAR_QUOTA * self.quota

    def allow(self, wanted: int, used: list[float]) -> Allowance:
        """Of ``wanted`` jobs, how many may start now: within what is left of the
        daily budget, then within the pacing; ``used`` are the times of the
        table's jobs in the last 24 h (each job once: :meth:`used`)."""
        within = max(0, min(wanted, self.quota - len(used)))
        room, wait = self._room(used)
        return Allowance(min(within, room), wait if room < within else 0.0, wanted - within)

    def _room(self, recent: list[float]) -> tuple[int, float]:
        """How many records may be written now under the pacing, and else how long until one may.

        Never more than ``pace_jobs`` records per PACE_WINDOW_S on a table,
        counted from the log: past that BigQuery answers rateLimitExceeded,
        and the failed job still counts against the daily quota.
        """
        now = self.clock()
        window = sorted(t for t in recent if t > now - PACE_WINDOW_S)
        room = self.pace_jobs - len(window)
        if room > 0:
            return room, 0.0
        return 0, max(0.01, PACE_WINDOW_S - (now - window[-self.pace_jobs]))
