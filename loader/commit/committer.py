"""The commit stage: shipped objects in the bucket -> load jobs, each exactly once.

``Committer.commit_once()`` runs once per prefix (so per dataset) at a time,
under the bucket lease (:mod:`.bucket_lease`), and keeps all its state in
the commit log (:mod:`.commitlog`), so any committer on any host can pick
up where a dead one stopped. Per table, in rounds:

1. tidy: the objects of a done record move to ``archive/``, then the record
   to ``commit-archive/``; a lone object a job rejected for its data moves
   to ``quarantine/`` with the reason; void and superseded records close;
2. finish open records (a committer died after writing them), and give a
   job that failed transiently its next attempt, a new record;
3. group the free staged objects (claimed by no record) into new records,
   as many objects per job as the settings allow, more near the budget,
   none past it; each record is created before its job is submitted;
4. submit every record's job, then wait for each: look the job id up first
   (adopting the job it names), and make a record void instead if an older
   record claims any of its objects (the commit log's rule);
5. write each outcome: ``done``, ``failed-backend`` (retried next round
   under the next attempt) or ``failed-data`` (the objects of a group then
   load one by one, and a lone rejected object is quarantined).

The daily budget and the per-10-s pacing are counted from the commit log's
records, so they hold across committers, hosts and restarts.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

from bqspool.schemas.display import safe_text
from bqspool.schemas.errors import BackendUnavailableError, ObjectConflictError, PreconditionFailedError

from .. import faults
from ..interfaces import JobOutcome, LoadJobs, ObjectStore, StoredObject, find_object
from ..layout import Layout, ObjectName, Outcome, RecordName
from ..logs import fields
from ..process import new_holder, peak_rss_mb, since_boot
from ..settings import DEFAULTS, Settings
from . import bucket_lease
from .budget import PACE_WINDOW_S, Budget
from .commitlog import LogReader, Record, TableLog, delays
from .report import CommitReport
from .tidy import Tidier, about

log = logging.getLogger("bqspool.loader")

MAX_ROUNDS = 64  # rounds per table per commit: regrouping after a rejection takes a few
MAX_TRANSIENT_ATTEMPTS = 5  # failed load jobs count against the table's daily quota


class Committer:
    """Loads what hosts shipped under ``settings.prefix`` into the warehouse's dataset.

    Depends on the warehouse's load jobs alone (:class:`~bqspool.loader.interfaces.LoadJobs`).
    """

    def __init__(
        self,
        objects: ObjectStore,
        warehouse: LoadJobs,
        settings: Settings = DEFAULTS,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        on_loaded: Callable[[list[str]], None] | None = None,  # told the objects of each job done (progress)
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.objects, self.warehouse, self.settings = objects, warehouse, settings
        self.on_loaded = on_loaded
        self.layout = Layout(settings.prefix)
        self.reader = LogReader(objects, self.layout)
        self.budget = Budget(settings, warehouse.limits, self.reader, clock)
        self.should_stop = should_stop
        self.clock, self.sleep = clock, sleep
        self.holder = new_holder()
        self.lease: bucket_lease.BucketLease | None = None
        self.tidier = Tidier(objects, self.layout, self._renew)
        self._renewed = 0.0
        self._report = CommitReport()  # this commit's
        self._eligible: dict[str, set[str]] = {}  # per table: what this commit takes on
        self._staged: dict[str, dict[str, StoredObject]] = {}  # per table: what this commit knows is staged

    # -- the whole commit -------------------------------------------------------

    def commit_once(self) -> CommitReport:
        """Load everything shipped now. LeaseHeldError if another committer is at
        it, LeaseLostError if this one lost its lease midway, BackendUnavailableError
        if GCS or BigQuery stay down. Safe to kill at any instant."""
        started = time.monotonic()
        report = self._report = CommitReport()
        self._renewed = since_boot()  # before the request: its time counts against the lease
        lease_s = self.settings.lease_seconds
        self.lease = bucket_lease.acquire(self.objects, self.layout.lease, self.holder, lease_s, self.clock)
        try:
            with self.tidier:
                # One listing of everything staged names the tables, fixes what this
                # commit takes on, and serves the first round: each is a walk of the bucket.
                staged = self.layout.by_table(self.objects, self.layout.staged())
                tables = sorted(set(staged) | set(self.layout.by_table(self.objects, self.layout.commits())))
                self._commit_tables(tables, staged, report)
        finally:
            bucket_lease.release(self.objects, self.lease)
            self.lease = None
        report.seconds = round(time.monotonic() - started, 3)
        report.peak_rss_mb = peak_rss_mb()
        if report.jobs_submitted or report.objects_loaded or report.quarantined or report.deferred:
            log.info(
                "commit: %d objects (%d events) loaded with %d jobs in %.1fs%s%s",
                report.objects_loaded,
                report.events_loaded,
                report.jobs_submitted,
                report.seconds,
                f"; quarantined {report.quarantined}" if report.quarantined else "",
                f"; deferred {report.deferred}" if report.deferred else "",
            )
        return report

    def _renew(self) -> None:
        """Before every step that changes anything: still ours? (LeaseLostError if not).

        Nobody may take the lease before it expires, so within the first third
        of it since our last write (by the boot-time clock, which a stopped
        process or a suspended machine cannot fool) it is certainly ours; past
        that, a conditional write extends it or finds it lost.
        """
        assert self.lease is not None
        if since_boot() - self._renewed < self.settings.lease_seconds / 3:
            return
        bucket_lease.renew(self.objects, self.lease, self.settings.lease_seconds, self.clock)
        self._renewed = since_boot()

    def _commit_tables(self, tables: list[str], staged: dict[str, list[StoredObject]], report: CommitReport) -> None:
        """Rounds over every table at once: pacing waits per table, so one table's
        backlog never holds up another's jobs, and the tables share each wait."""
        failures: dict[str, int] = {}  # transient job failures in this commit: a later one starts afresh
        active = list(tables)
        # What was staged when this commit began, and halves split from it: hosts
        # keep shipping meanwhile, and a commit must end; the next one takes the rest.
        self._eligible = {t: {o.name for o in staged.get(t, [])} for t in tables}
        self._staged = {t: {o.name: o for o in staged.get(t, [])} for t in tables}
        for _ in range(MAX_ROUNDS):
            if not active or self.should_stop():
                break
            started, waits = [], []
            for table in list(active):
                todo, wait = self._round(table, report)
                if wait:
                    waits.append(wait)
                elif not todo:
                    active.remove(table)
                # Submit every job before waiting for any: BigQuery runs them side by side.
                # One fresh listing for the round's records, all written before it (the rule's check).
                fresh = self.reader.table(table) if todo else None
                started += [(rec, out) for rec in todo if (out := self._start(table, rec, fresh, report)) is not None]
            for rec, outcome in started:
                if self._end(rec, outcome, report) == "failed-backend":
                    failures[rec.table] = failures.get(rec.table, 0) + 1
                    if failures[rec.table] >= MAX_TRANSIENT_ATTEMPTS:
                        raise BackendUnavailableError(
                            f"load jobs for {rec.table} failed {failures[rec.table]} times; see the log"
                        )
            if not started and waits:
                wait = min(waits)
                log.info("pacing: waiting %.1fs for a table's 10-s window of load jobs", wait)
                self.sleep(wait)

    def _round(self, table: str, report: CommitReport) -> tuple[list[Record], float]:
        """Tidy ``table``, then the records to run now, and how long pacing holds others back."""
        tlog = self.reader.table(table)
        # The view the last round left, not a fresh listing: before the archive moves
        # the area still holds every loaded object, and listing 10,000 takes a second.
        # Objects shipped since are not this commit's to load (see _eligible).
        staged = self._staged.get(table)
        if staged is None:
            staged = {o.name: o for o in self.objects.list_objects(self.layout.staged(table))}
        known = len(staged)
        if self.tidier.tidy(table, tlog, staged, report) or len(staged) != known:
            # Listed again once the loaded objects are gone, when it is short: it
            # shows the halves a split staged, and what waits for the next commit.
            staged = {o.name: o for o in self.objects.list_objects(self.layout.staged(table))}
        self._staged[table] = staged
        report.waiting[table] = len(staged)
        recent = self.budget.recent(tlog)
        todo = tlog.open()
        retries, wait = self._next_attempts(table, tlog, recent)
        todo += retries
        if not todo and not wait:
            todo, wait = self._new_records(table, tlog, staged, report, recent)
        return todo, wait

    # -- records -------------------------------------------------------------------

    def _new_records(
        self, table: str, tlog: TableLog, staged: dict[str, StoredObject], report: CommitReport, recent: list[float]
    ) -> tuple[list[Record], float]:
        """Group the free staged objects into new records, as the budget and the pacing allow."""
        free = self._free(table, tlog, staged)
        if not free:
            return [], 0.0
        used = self.budget.used(table, tlog)
        quota = self.budget.quota
        if len(used) >= quota:
            report.deferred[table] = f"load job budget used: {len(used)} of {quota} in the last 24h"
            log.warning(
                "table %s: %s; deferring %d objects", table, report.deferred[table], len(free), extra=fields(table)
            )
            return [], 0.0
        per_job = self.budget.objects_per_job(len(used))
        if self.budget.near(len(used)):
            log.warning(
                "table %s: %d of %d load jobs used in 24h; up to %d objects per job", table, len(used), quota, per_job
            )
        groups = _groups(tlog, free, per_job)
        allowed = self.budget.allow(len(groups), len(used), recent + self.budget.in_window(used))
        if allowed.over_budget:
            report.deferred[table] = f"{allowed.over_budget} load jobs wait for the daily budget"
        if allowed.wait:
            log.info(
                "table %s: %d load jobs in the last %.0fs; the rest waits", table, self.budget.pace_jobs, PACE_WINDOW_S
            )
        records = [
            self._create(
                Record(
                    table,
                    uuid.uuid4().hex[:20],
                    0,
                    tuple(g),
                    holder=self.holder,
                    nbytes=sum(staged[n].size for n in g if n in staged),
                )
            )
            for g in groups[: allowed.jobs]
        ]
        return records, allowed.wait

    def _free(self, table: str, tlog: TableLog, staged: dict[str, StoredObject]) -> list[str]:
        """Staged objects this commit took on that no record claims."""
        claimed = {s for r in tlog.claiming() for s in r.sources}
        # A commit whose job failed transiently keeps its objects for its next attempt.
        claimed |= {s for r in tlog.latest().values() if tlog.outcome(r.key) == "failed-backend" for s in r.sources}
        eligible = self._eligible.get(table, set())
        return [n for n in staged if n not in claimed and _eligible(n, eligible)]

    def _next_attempts(self, table: str, tlog: TableLog, recent: list[float]) -> tuple[list[Record], float]:
        """A job that failed transiently wrote nothing: its commit's next attempt."""
        due = [r for r in tlog.latest().values() if tlog.outcome(r.key) == "failed-backend"]
        if not due:
            return [], 0.0
        used = len(self.budget.used(table, tlog))
        allowed = self.budget.allow(len(due), used, recent)  # a retry is a job like any other
        if allowed.over_budget and self._report.defer(
            table, f"load job budget used: {used} of {self.budget.quota} in the last 24h; retries wait"
        ):
            log.warning("table %s: %s", table, self._report.deferred[table], extra=fields(table))
        out = [self._create(replace(rec, attempt=rec.attempt + 1, holder=self.holder)) for rec in due[: allowed.jobs]]
        return out, allowed.wait

    def _create(self, rec: Record) -> Record:
        """Write ``rec`` to the commit log (create-only) before its job exists."""
        self._renew()
        name = self.layout.record(rec.table, RecordName(rec.key, "record"))
        try:
            obj = self.objects.write_object(name, rec.to_json(), 0)
        except PreconditionFailedError:  # the same next attempt, written by another committer first
            found = find_object(self.objects, name)
            assert found is not None, "a record that exists is never deleted, only moved after it is finished"
            obj = found
        faults.hit("after_record")
        written = replace(rec, name=name, created=obj.created)
        self.reader.remember(obj, written)
        return written

    # -- jobs -----------------------------------------------------------------------

    def _start(self, table: str, rec: Record, fresh: TableLog | None, report: CommitReport) -> JobOutcome | None:
        """Submit ``rec``'s job, or adopt the job its id names; None if the record is void or finished."""
        self._renew()
        fresh = fresh or self.reader.table(table)  # listed after ``rec`` was written
        mine = fresh.records.get(rec.key)
        if mine is None or fresh.outcome(rec.key) is not None:
            return None  # finished by another committer meanwhile
        older = fresh.older_claim(mine)
        if older is not None:
            self._mark(rec, "void", {"claimed_by": older.key})
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
            self._renew()  # the last check before the job
            outcome = self.warehouse.start_load(rec.job_id, table, uris)
            report.jobs_submitted += 1
            faults.hit("after_submit")
        _check_sources(outcome, uris)
        return outcome

    def _end(self, rec: Record, outcome: JobOutcome, report: CommitReport) -> Outcome:
        """Wait for ``rec``'s job and write its outcome."""
        if not outcome.done:
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
            self._mark(rec, "failed-backend", {"error": error})
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
        self._mark(rec, "failed-data", {"error": error})
        report.job(rec.table, "failed-data")
        return "failed-data"

    def _loaded(self, rec: Record, outcome: JobOutcome, report: CommitReport) -> None:
        """Record a job that loaded its objects, and count it."""
        # The names say how many events each object holds; the job's own
        # count is the fallback (the emulator's counts the whole table).
        events = rec.events if rec.events is not None else outcome.output_rows or 0
        self._mark(rec, "done", {"rows": outcome.output_rows, "events": events, "bytes": rec.nbytes})
        report.objects_loaded += len(rec.sources)
        report.events_loaded += events
        report.job(rec.table, "done")
        log.info("load job %s loaded %d events from %d objects", rec.job_id, events, len(rec.sources), extra=about(rec))
        mine = report.table(rec.table)
        mine["events"] += events
        mine["objects"] += len(rec.sources)
        mine["delays"] += delays(rec.sources, self.clock())
        if self.on_loaded is not None:
            self.on_loaded(list(rec.sources))

    def _mark(self, rec: Record, outcome: Outcome, doc: dict) -> None:
        self._renew()
        name = self.layout.record(rec.table, RecordName(rec.key, outcome))
        try:
            self.objects.write_object(name, json.dumps({"job_id": rec.job_id, **doc}).encode(), 0)
        except PreconditionFailedError:
            pass  # written already, by us before a crash or by another committer: outcomes never change


def _groups(tlog: TableLog, free: list[str], per_job: int) -> list[list[str]]:
    """``free`` objects in groups of ``per_job``, except those that load alone:
    halves of a rejected object, and objects of a group a job rejected."""
    rejected_together = {
        s
        for r in tlog.records.values()
        if tlog.outcome(r.key) == "failed-data" and len(r.sources) > 1
        for s in r.sources
    }
    solo = rejected_together | {n for n in free if ObjectName.of_file(n).is_half}
    shared = [n for n in free if n not in solo]
    return [[n] for n in free if n in solo] + [shared[i : i + per_job] for i in range(0, len(shared), per_job)]


def _eligible(name: str, eligible: set[str]) -> bool:
    """``name`` was staged when the commit began, or is a half (of a half...) of one that was."""
    folder = name.rpartition("/")[0]
    return any(f"{folder}/{n.file}" in eligible for n in ObjectName.of_file(name).lineage())


def _check_sources(outcome: JobOutcome, uris: list[str]) -> None:
    """Adopt an existing job only if it loads exactly our objects."""
    sources = outcome.source_uris
    if sources is not None and sorted(sources) != sorted(uris):
        raise ObjectConflictError(
            f"load job {outcome.job_id} exists but loads other objects "
            f"({len(sources)} source URIs, not ours); refusing to adopt it"
        )
