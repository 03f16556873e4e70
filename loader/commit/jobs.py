"""A record's load job: submitted (or adopted), waited for, and its outcome written.

The job id derives from the record alone; before inserting, the job is
looked up (adopting the job the id names, but only if it loads exactly the
record's objects), and before that the commit log is listed afresh: a
record an older record's claim overlaps is made void instead (the rule,
:mod:`.commitlog`). The outcome marker is written create-only: outcomes
never change.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from bqspool.schemas.display import safe_text
from bqspool.schemas.errors import BackendUnavailableError, ObjectConflictError, PreconditionFailedError

from .. import faults
from ..interfaces import JobOutcome, LoadJobs, ObjectStore
from ..layout import Layout, Outcome, RecordName
from ..progress import Progress
from .commitlog import LogReader, Record, TableLog, delays
from .report import CommitReport
from .tidy import about

log = logging.getLogger("bqspool.loader")


class Jobs:
    """Starts and ends the jobs of one committer's records; ``renew`` runs before each change."""

    def __init__(
        self,
        objects: ObjectStore,
        warehouse: LoadJobs,
        layout: Layout,
        reader: LogReader,
        renew: Callable[[], None],
        on_loaded: Callable[[list[str]], None] | None,
    ):
        self.objects, self.warehouse, self.layout, self.reader = objects, warehouse, layout, reader
        self.renew, self.on_loaded = renew, on_loaded
        self.progress_enabled = False  # a bar or log lines while a commit's jobs load (see track)
        self.progress = Progress(0, False)

    def track(self, objects: int) -> None:
        """Show the progress of loading ``objects`` (a commit's start), or end it (0)."""
        self.progress.close()
        self.progress = Progress(objects, self.progress_enabled and objects > 0, what="loading", unit="objects")

    def start(self, table: str, rec: Record, fresh: TableLog | None, report: CommitReport) -> JobOutcome | None:
        """Submit ``rec``'s job, or adopt the job its id names; None if the record is void or finished."""
        self.renew()
        fresh = fresh or self.reader.table(table)  # listed after ``rec`` was written
        mine = fresh.records.get(rec.key)
        if mine is None or fresh.outcome(rec.key) is not None:
            return None  # finished by another committer meanwhile
        older = fresh.older_claim(mine)
        if older is not None:
            self.mark(rec, "void", {"claimed_by": older.key})
            report.voided += 1
            report.job(table, "void")
            log.info(
                "commit %s is void: the older commit %s claims some of its objects",
                rec.key,
                older.key,
                extra=about(rec),
            )
            return None
        uris = [self.objects.uri(s) for s in rec.sources]
        outcome = self.warehouse.get_job(rec.job_id)
        if outcome is None:
            self.renew()  # the last check before the job
            with report.timing("load_jobs"):
                outcome = self.warehouse.start_load(rec.job_id, table, uris)
            report.jobs_submitted += 1
            faults.hit("after_submit")
        _check_sources(outcome, uris)
        return outcome

    def end(self, rec: Record, outcome: JobOutcome, report: CommitReport) -> Outcome:
        """Wait for ``rec``'s job and write its outcome."""
        if not outcome.done:
            with report.timing("load_jobs"):
                outcome = self.warehouse.wait(rec.job_id)
        if not outcome.done:
            raise BackendUnavailableError(f"load job {rec.job_id} did not finish in time")
        faults.hit("after_job_done")
        if outcome.error is None:
            self._loaded(rec, outcome, report)
            return "done"
        error = safe_text(str(outcome.error), 1000)
        if outcome.transient:
            log.warning(
                "load job %s failed transiently (%s); retrying as attempt %d",
                rec.job_id,
                outcome.error.reason,
                rec.attempt + 1,
                extra=about(rec),
            )
            self.mark(rec, "failed-backend", {"error": error})
            report.job(rec.table, "failed-backend")
            return "failed-backend"
        # BigQuery's message may quote a rejected value: it goes into the
        # record and the debug log; the warning names only the reason.
        log.debug("load job %s rejected its data: %s", rec.job_id, error)
        log.warning(
            "load job %s for %d objects rejected its data (%s)%s",
            rec.job_id,
            len(rec.sources),
            outcome.error.reason,
            "; loading them one by one to find the bad one" if len(rec.sources) > 1 else "",
            extra=about(rec),
        )
        self.mark(rec, "failed-data", {"error": error})
        report.job(rec.table, "failed-data")
        return "failed-data"

    def _loaded(self, rec: Record, outcome: JobOutcome, report: CommitReport) -> None:
        """Record a job that loaded its objects, and count it."""
        # The names say how many events each object holds; the job's own
        # count is the fallback (the emulator's counts the whole table).
        events = rec.events if rec.events is not None else outcome.output_rows or 0
        self.mark(rec, "done", {"rows": outcome.output_rows, "events": events, "bytes": rec.nbytes})
        report.objects_loaded += len(rec.sources)
        report.events_loaded += events
        report.job(rec.table, "done")
        log.info("load job %s loaded %d events from %d objects", rec.job_id, events, len(rec.sources), extra=about(rec))
        mine = report.table(rec.table)
        mine["events"] += events
        mine["objects"] += len(rec.sources)
        mine["delays"] += delays(rec.sources, self.objects.now())
        self.progress.advance(len(rec.sources))
        if self.on_loaded is not None:
            self.on_loaded(list(rec.sources))

    def mark(self, rec: Record, outcome: Outcome, doc: dict) -> None:
        self.renew()
        name = self.layout.record(rec.table, RecordName(rec.key, outcome))
        try:
            self.objects.write_object(name, json.dumps({"job_id": rec.job_id, **doc}).encode(), 0)
        except PreconditionFailedError:
            pass  # written already, by us before a crash or by another committer: outcomes never change


def _check_sources(outcome: JobOutcome, uris: list[str]) -> None:
    """Adopt an existing job only if it loads exactly our objects."""
    sources = outcome.source_uris
    if sources is not None and sorted(sources) != sorted(uris):
        raise ObjectConflictError(
            f"load job {outcome.job_id} exists but loads other objects "
            f"({len(sources)} source URIs, not ours); refusing to adopt it"
        )
