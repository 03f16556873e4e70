"""The load half of the drain: group uploaded batches, submit, wait, ack, retry, narrow a rejection.

A mixin of :class:`~.drain.Drainer`, which provides the connection state,
the fence, the budget and pacing settings and the injected clock.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from bqspool.schemas.display import safe_text
from bqspool.schemas.errors import BackendUnavailableError, ObjectConflictError

from . import bisect, faults, ledger

if TYPE_CHECKING:
    from .drain import DrainReport
    from .interfaces import JobOutcome, ObjectStore, Warehouse
    from .progress import Progress

log = logging.getLogger("bqspool.loader")

MAX_TRANSIENT_ATTEMPTS = 5  # failed load jobs count against the table's daily quota
NEAR_QUOTA = 0.8
PACE_WINDOW_S = 10.0  # the warehouse's limits.jobs_per_table_10s are per this window


class LoadSteps:
    objects: ObjectStore
    warehouse: Warehouse
    fence: ledger.Fence | None
    quota: int
    per_job: int
    max_per_job: int
    pace_jobs: int
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    _recent_jobs: dict[str, deque[float]]

    def _renew(self, conn: sqlite3.Connection) -> None:  # provided by Drainer
        raise NotImplementedError

    def _group(self, conn: sqlite3.Connection, report: DrainReport) -> None:
        ready = [b for b in ledger.batches(conn, "uploaded") if b.load_id is None]
        by_stream: dict[str, list[ledger.Batch]] = {}
        for b in ready:
            by_stream.setdefault(b.stream, []).append(b)
        for stream, items in by_stream.items():
            used = ledger.jobs_last_day(conn, stream)
            remaining = self.quota - used
            if remaining <= 0:
                report.deferred[stream] = f"load job budget used: {used} of {self.quota} in the last 24h"
                log.warning(
                    "table %s: %d load jobs in the last 24h reach the budget of %d; deferring %d batches",
                    stream,
                    used,
                    self.quota,
                    len(items),
                )
                continue
            per_job = self.per_job
            if used >= NEAR_QUOTA * self.quota:
                per_job = self.max_per_job  # as many files per job as the warehouse takes
                log.warning(
                    "table %s: %d of %d load jobs used in 24h; grouping up to %d batches per job",
                    stream,
                    used,
                    self.quota,
                    per_job,
                )
            solo = [[b] for b in items if b.solo]
            shared = [b for b in items if not b.solo]
            groups = solo + [shared[i : i + per_job] for i in range(0, len(shared), per_job)]
            if len(groups) > remaining:
                report.deferred[stream] = f"{len(groups) - remaining} load groups wait for quota"
                groups = groups[:remaining]
            for g in groups:
                ledger.group(conn, stream, g, self.fence)
        faults.hit("after_group")

    def _submit(self, conn: sqlite3.Connection, load: ledger.Load, report: DrainReport) -> JobOutcome | None:
        """Start ``load``'s job, or adopt the job its id names already.

        Returns None when the table's load budget is used up (deferred).
        """
        uris = [self.objects.uri(b.object_name) for b in ledger.load_batches(conn, load.load_id)]
        outcome = self.warehouse.get_job(load.job_id)
        if outcome is None:
            if ledger.jobs_last_day(conn, load.stream) >= self.quota:
                report.deferred[load.stream] = "load job budget used"
                return None
            self._pace(load.stream)
            ledger.record_submission(conn, load, self.fence)
            self._renew(conn)  # the last check before the job: nobody else may have taken over
            outcome = self.warehouse.start_load(load.job_id, load.stream, uris)
            report.jobs_submitted += 1
            faults.hit("after_submit")
        _check_sources(outcome, uris)
        return outcome

    def _finish(
        self, conn: sqlite3.Connection, load: ledger.Load, outcome: JobOutcome, report: DrainReport, progress: Progress
    ) -> None:
        """Wait for ``load``'s job, then ack it, retry it or narrow its rejection down."""
        members = ledger.load_batches(conn, load.load_id)
        failures = 0  # transient failures in this drain: a later drain starts afresh at the next attempt
        while True:
            if not outcome.done:
                outcome = self.warehouse.wait(load.job_id)
            if not outcome.done:
                raise BackendUnavailableError(f"load job {load.job_id} did not finish in time")
            faults.hit("after_job_done")
            if outcome.error is None:
                acked = ledger.ack(conn, load, fault=faults.hit, fence=self.fence)
                faults.hit("after_ack")
                report.events_loaded += acked
                report.batches_loaded += len(members)
                progress.advance(acked)
                return
            error = str(outcome.error)
            if outcome.transient:
                failures += 1
                if failures >= MAX_TRANSIENT_ATTEMPTS:
                    raise BackendUnavailableError(f"load job for {load.stream} failed {failures} times: {error}")
                log.warning(
                    "load job %s failed transiently (%s); retrying as attempt %d", load.job_id, error, load.attempt + 1
                )
                load = ledger.next_attempt(conn, load, error, self.fence)
                self._renew(conn)
                retried = self._submit(conn, load, report)
                if retried is None:
                    return
                outcome = retried
                continue
            self._rejected(conn, load, error, report)
            return

    def _rejected(self, conn: sqlite3.Connection, load: ledger.Load, error: str, report: DrainReport) -> None:
        # BigQuery's message may quote the rejected value: it goes into the
        # dead letter or the quarantine record and the debug log; the lines
        # above debug name only the job, the batch and the error's reason.
        log.debug("load job %s rejected its data: %s", load.job_id, error)
        reason = error.partition(":")[0]
        result = bisect.fail_load(conn, load, safe_text(error, 1000), self.fence)
        faults.hit("after_reject")
        if result.regrouped:
            log.warning(
                "load job %s for %d batches rejected its data (%s); loading them one by one to find the bad one",
                load.job_id,
                result.regrouped,
                reason,
            )
        for batch_id in result.split:
            log.warning(
                "load job %s rejected batch %s (%s); loading it in halves to find the bad rows",
                load.job_id,
                batch_id,
                reason,
            )
        if result.dead:
            report.dead_lettered += len(result.dead)
            log.error(
                "load job %s rejected event %s (%s); it is a dead letter with BigQuery's reason",
                load.job_id,
                ", ".join(str(i) for i in result.dead),
                reason,
            )
        for b in result.quarantined:
            report.quarantined.append(b.batch_id)
            log.error(
                "batch %s quarantined: load jobs rejected both its halves (%s); see `bqspool quarantine list`",
                b.batch_id,
                reason,
            )

    def _pace(self, stream: str) -> None:
        """Wait, if needed, so a table never gets more than ``pace_jobs`` jobs per
        PACE_WINDOW_S: past that BigQuery answers rateLimitExceeded, and the
        failed job still counts against the daily quota."""
        recent = self._recent_jobs.setdefault(stream, deque())
        now = self.clock()
        while recent and now - recent[0] >= PACE_WINDOW_S:
            recent.popleft()
        if len(recent) >= self.pace_jobs:
            wait = PACE_WINDOW_S - (now - recent[0])
            log.info("table %s: %d load jobs in %.0fs; waiting %.1fs", stream, len(recent), PACE_WINDOW_S, wait)
            self.sleep(wait)
            recent.popleft()
            now = self.clock()
        recent.append(now)


def round_robin(loads: list[ledger.Load]) -> list[ledger.Load]:
    """Loads in turns across tables: pacing waits per table, so one table's
    backlog never holds up another's jobs."""
    queues: dict[str, deque[ledger.Load]] = {}
    for load in loads:
        queues.setdefault(load.stream, deque()).append(load)
    out = []
    while queues:
        for stream in list(queues):
            out.append(queues[stream].popleft())
            if not queues[stream]:
                del queues[stream]
    return out


def _check_sources(outcome: JobOutcome, uris: list[str]) -> None:
    """Adopt an existing job only if it loads exactly our objects."""
    sources = outcome.source_uris
    if sources is not None and sorted(sources) != sorted(uris):
        raise ObjectConflictError(
            f"load job {outcome.job_id} exists but loads other objects "
            f"({len(sources)} source URIs, not ours); refusing to adopt it"
        )
