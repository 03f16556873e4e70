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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from bqspool.schemas.display import safe_text
from bqspool.schemas.errors import BackendUnavailableError, ObjectConflictError, PreconditionFailedError

from . import bucket_lease, faults
from .commitlog import DAY_S, Layout, LogReader, Record, TableLog, delays
from .ledger import new_holder
from .logs import fields
from .progress import peak_rss_mb
from .split import Splitter

if TYPE_CHECKING:
    from .interfaces import JobOutcome, ObjectStore, StoredObject, Warehouse

log = logging.getLogger("bqspool.loader")

MAX_ROUNDS = 64  # rounds per table per commit: regrouping after a rejection takes a few
MAX_TRANSIENT_ATTEMPTS = 5  # failed load jobs count against the table's daily quota
NEAR_QUOTA = 0.8
PACE_WINDOW_S = 10.0  # the warehouse's limits.jobs_per_table_10s are per this window
MOVE_CHUNK = 100  # objects archived per call of move_objects: one GCS batch request of each kind


@dataclass
class CommitReport:
    objects_loaded: int = 0
    events_loaded: int = 0
    jobs_submitted: int = 0
    quarantined: list[str] = field(default_factory=list)
    dead_lettered: int = 0  # events a load job rejected alone, found by splitting their object
    voided: int = 0  # records given up because an older one claimed their objects
    deferred: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)  # objects still staged per table, after this commit
    # Per table: events and objects loaded, jobs by outcome, and (seconds, events) from each loaded
    # object's oldest append to its load, for the metrics.
    per_table: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def table(self, table: str) -> dict:
        return self.per_table.setdefault(table, {"events": 0, "objects": 0, "jobs": {}, "delays": []})

    def job(self, table: str, outcome: str) -> None:
        jobs = self.table(table)["jobs"]
        jobs[outcome] = jobs.get(outcome, 0) + 1


class Committer:
    """Loads what hosts shipped under ``prefix`` into the warehouse's dataset."""

    def __init__(
        self,
        objects: ObjectStore,
        warehouse: Warehouse,
        *,
        prefix: str = "bqspool",
        per_job: int = 500,
        quota_per_table_day: int = 1000,
        pace_jobs: int | None = None,
        lease_seconds: float = 120.0,
        workers: int = 8,  # the storage client keeps 10 connections per pool: more threads only churn them
        should_stop: Callable[[], bool] = lambda: False,
        on_loaded: Callable[[list[str]], None] | None = None,  # told the objects of each job done (progress)
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        limits = warehouse.limits
        self.on_loaded = on_loaded
        self.objects, self.warehouse = objects, warehouse
        self.layout = Layout(prefix)
        self.reader = LogReader(objects, self.layout)
        self.quota = min(quota_per_table_day, limits.jobs_per_table_day)
        self.per_job = min(per_job, limits.uris_per_job)
        self.max_per_job = limits.uris_per_job
        self.pace_jobs = pace_jobs or limits.jobs_per_table_10s
        self.lease_seconds = lease_seconds
        self.workers = workers
        self.should_stop = should_stop
        self.clock, self.sleep = clock, sleep
        self.holder = new_holder()
        self.lease: bucket_lease.BucketLease | None = None
        self._renewed = 0.0
        self._report: CommitReport | None = None
        self._eligible: dict[str, set[str]] = {}
        self._staged: dict[str, dict[str, StoredObject]] = {}  # per table: what this commit knows is staged
        self.splitter = Splitter(objects, self.layout)

    # -- the whole commit -------------------------------------------------------

    def commit_once(self) -> CommitReport:
        """Load everything shipped now. LeaseHeldError if another committer is at
        it, LeaseLostError if this one lost its lease midway, BackendUnavailableError
        if GCS or BigQuery stay down. Safe to kill at any instant."""
        started = time.monotonic()
        report = CommitReport()
        self._report = report
        self._renewed = _since_boot()  # before the request: its time counts against the lease
        self.lease = bucket_lease.acquire(self.objects, self.layout.lease, self.holder, self.lease_seconds, self.clock)
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="bqspool-move") as self._pool:
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
        if _since_boot() - self._renewed < self.lease_seconds / 3:
            return
        bucket_lease.renew(self.objects, self.lease, self.lease_seconds, self.clock)
        self._renewed = _since_boot()

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
        if self._tidy(table, tlog, staged, report) or len(staged) != known:
            # Listed again once the loaded objects are gone, when it is short: it
            # shows the halves a split staged, and what waits for the next commit.
            staged = {o.name: o for o in self.objects.list_objects(self.layout.staged(table))}
        self._staged[table] = staged
        report.waiting[table] = len(staged)
        recent = self._recent(tlog)
        todo = tlog.open()
        retries, wait = self._next_attempts(table, tlog, recent)
        todo += retries
        if not todo and not wait:
            todo, wait = self._new_records(table, tlog, staged, report, recent)
        return todo, wait

    def _recent(self, tlog: TableLog) -> list[float]:
        now = self.clock()
        return [r.created for r in tlog.records.values() if r.created > now - PACE_WINDOW_S]

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

    # -- records -------------------------------------------------------------------

    def _new_records(
        self, table: str, tlog: TableLog, staged: dict, report: CommitReport, recent: list[float]
    ) -> tuple[list[Record], float]:
        claimed = {s for r in tlog.claiming() for s in r.sources}
        # A commit whose job failed transiently keeps its objects for its next attempt.
        claimed |= {s for r in tlog.latest().values() if tlog.outcome(r.key) == "failed-backend" for s in r.sources}
        eligible = self._eligible.get(table, set())
        free = [n for n in staged if n not in claimed and _eligible(n, eligible)]
        if not free:
            return [], 0.0
        now = self.clock()
        used = self.reader.jobs_since(table, now - DAY_S, tlog, now)
        remaining = self.quota - len(used)
        if remaining <= 0:
            report.deferred[table] = f"load job budget used: {len(used)} of {self.quota} in the last 24h"
            log.warning(
                "table %s: %s; deferring %d objects", table, report.deferred[table], len(free), extra=fields(table)
            )
            return [], 0.0
        per_job = self.per_job
        if len(used) >= NEAR_QUOTA * self.quota:
            per_job = self.max_per_job  # as many objects per job as the warehouse takes
            log.warning(
                "table %s: %d of %d load jobs used in 24h; up to %d objects per job",
                table,
                len(used),
                self.quota,
                per_job,
            )
        rejected_together = {
            s
            for r in tlog.records.values()
            if tlog.outcome(r.key) == "failed-data" and len(r.sources) > 1
            for s in r.sources
        }
        solo = rejected_together | {n for n in free if "~" in n}  # halves of a rejected object load alone
        shared = [n for n in free if n not in solo]
        groups = [[n] for n in free if n in solo] + [shared[i : i + per_job] for i in range(0, len(shared), per_job)]
        if len(groups) > remaining:
            report.deferred[table] = f"{len(groups) - remaining} load jobs wait for the daily budget"
            groups = groups[:remaining]
        room, wait = self._room(recent + [t for t in used if t > now - PACE_WINDOW_S])
        if room < len(groups):
            log.info("table %s: %d load jobs in the last %.0fs; the rest waits", table, self.pace_jobs, PACE_WINDOW_S)
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
            for g in groups[:room]
        ]
        return records, (wait if room < len(groups) else 0.0)

    def _defer(self, table: str, why: str) -> None:
        if self._report is not None and table not in self._report.deferred:
            self._report.deferred[table] = why
            log.warning("table %s: %s", table, why, extra=fields(table))

    def _next_attempts(self, table: str, tlog: TableLog, recent: list[float]) -> tuple[list[Record], float]:
        """A job that failed transiently wrote nothing: its commit's next attempt."""
        due = [r for r in tlog.latest().values() if tlog.outcome(r.key) == "failed-backend"]
        if not due:
            return [], 0.0
        now = self.clock()
        used = len(self.reader.jobs_since(table, now - DAY_S, tlog, now))
        if used + len(due) > self.quota:  # a retry is a job like any other
            due = due[: max(0, self.quota - used)]
            self._defer(table, f"load job budget used: {used} of {self.quota} in the last 24h; retries wait")
        room, wait = self._room(recent)
        out = [self._create(replace(rec, attempt=rec.attempt + 1, holder=self.holder)) for rec in due[:room]]
        return out, (wait if room < len(due) else 0.0)

    def _create(self, rec: Record) -> Record:
        """Write ``rec`` to the commit log (create-only) before its job exists."""
        self._renew()
        name = f"{self.layout.commits(rec.table)}{rec.key}.json"
        try:
            obj = self.objects.write_object(name, rec.to_json(), 0)
        except PreconditionFailedError:  # the same next attempt, written by another committer first
            obj = next(o for o in self.objects.list_objects(name) if o.name == name)
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
                extra=fields(table, job_id=rec.job_id, attempt=rec.attempt),
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

    def _end(self, rec: Record, outcome: JobOutcome, report: CommitReport) -> str:
        if not outcome.done:
            outcome = self.warehouse.wait(rec.job_id)
        if not outcome.done:
            raise BackendUnavailableError(f"load job {rec.job_id} did not finish in time")
        faults.hit("after_job_done")
        if outcome.error is None:
            # The names say how many events each object holds; the job's own
            # count is the fallback (the emulator's counts the whole table).
            events = rec.events if rec.events is not None else outcome.output_rows or 0
            self._mark(rec, "done", {"rows": outcome.output_rows, "events": events, "bytes": rec.nbytes})
            report.objects_loaded += len(rec.sources)
            report.events_loaded += events
            report.job(rec.table, "done")
            log.info(
                "load job %s loaded %d events from %d objects",
                rec.job_id,
                events,
                len(rec.sources),
                extra=_about(rec),
            )
            mine = report.table(rec.table)
            mine["events"] += events
            mine["objects"] += len(rec.sources)
            mine["delays"] += delays(rec.sources, self.clock())
            if self.on_loaded is not None:
                self.on_loaded(list(rec.sources))
            return "done"
        error = safe_text(str(outcome.error), 1000)
        if outcome.transient:
            log.warning(
                "load job %s failed transiently (%s); retrying as attempt %d",
                rec.job_id,
                outcome.error.reason,
                rec.attempt + 1,
                extra=_about(rec),
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
            extra=_about(rec),
        )
        self._mark(rec, "failed-data", {"error": error})
        report.job(rec.table, "failed-data")
        return "failed-data"

    def _mark(self, rec: Record, outcome: str, doc: dict) -> None:
        self._renew()
        name = rec.name.removesuffix(".json") + f".{outcome}"
        try:
            self.objects.write_object(name, json.dumps({"job_id": rec.job_id, **doc}).encode(), 0)
        except PreconditionFailedError:
            pass  # written already, by us before a crash or by another committer: outcomes never change

    # -- tidying -----------------------------------------------------------------------

    def _tidy(self, table: str, tlog: TableLog, staged: dict, report: CommitReport) -> bool:
        """Archive, quarantine, split and close what the log says is finished; whether anything was split."""
        split = False
        latest = {r.commit: r.attempt for r in tlog.latest().values()}
        rejected = {
            r.sources[0] for r in tlog.records.values() if tlog.outcome(r.key) == "failed-data" and len(r.sources) == 1
        }
        # Done records first: a group's record closes once its objects, loaded alone, are archived.
        for rec in sorted(tlog.records.values(), key=lambda r: (tlog.outcome(r.key) != "done", r.name)):
            outcome = tlog.outcome(rec.key)
            if outcome is None:
                continue
            if outcome == "done":
                self._move_all([s for s in rec.sources if s in staged], "archive", staged)
                faults.hit("after_archive")
            elif outcome == "failed-data" and len(rec.sources) == 1:
                split = self._rejected_alone(rec, tlog, staged, rejected, report) or split
            if outcome == "failed-backend" and latest[rec.commit] == rec.attempt:
                continue  # its next attempt is yet to be written
            if outcome == "failed-data" and any(s in staged for s in rec.sources):
                continue  # its objects still load one by one: it says so
            self._close(rec, tlog)
        known = {r.key for r in tlog.records.values()}
        for obj in tlog.objects:  # outcomes whose record was closed before them (a crash between the two)
            stem = obj.name.rpartition("/")[2].partition(".")[0]
            if not obj.name.endswith(".json") and stem not in known:
                self._renew()
                self.objects.move_object(obj.name, self._archived(table, obj.name, obj.created))
        return split

    def _rejected_alone(
        self, rec: Record, tlog: TableLog, staged: dict, rejected: set[str], report: CommitReport
    ) -> bool:
        """Split the object, dead-letter its one row, or quarantine its shipped object
        whole (see :mod:`.split`); whether it was split."""
        (src,) = rec.sources
        under_way = self.splitter.quarantine_under_way(src)
        if src not in staged and not under_way:
            return False
        marker = tlog.outcomes[rec.key]["failed-data"]
        found = self.objects.read_object(marker.name)
        error = json.loads(found[0]).get("error", "") if found else ""
        reason = f"rejected by load job {rec.job_id}: {error}"
        self._renew()
        staged.pop(src, None)
        if under_way or self.splitter.whole_rejected(src, rejected):
            root = self.splitter.quarantine_whole(
                src, f"both halves were rejected, so not a few bad rows: {reason}", staged
            )
            if root not in report.quarantined:
                report.quarantined.append(root)
                log.error(
                    "object %s quarantined: load jobs rejected both its halves; see `bqspool quarantine list`", root
                )
            return False
        done = self.splitter.narrow(src, reason)
        if done == "unreadable":
            report.quarantined.append(src)
            log.error(
                "object %s quarantined: it is not a readable Parquet file; see `bqspool quarantine list`",
                src,
                extra=_about(rec),
            )
        elif done == "dead":
            report.dead_lettered += 1
            log.error(
                "load job %s rejected the one event of %s; it is a dead letter with the reason",
                rec.job_id,
                src,
                extra=_about(rec),
            )
        else:
            faults.hit("after_split")
            log.warning(
                "load job %s rejected %s alone; loading it in halves to find the bad rows",
                rec.job_id,
                src,
                extra=_about(rec),
            )
        return done == "split"

    def _move_all(self, names: list[str], area: str, staged: dict) -> None:
        if not names:
            return
        self._renew()
        moves = [(n, self.layout.moved(n, area)) for n in names]
        # In chunks the store can batch (GCS: 100 calls a request), over the pool.
        chunks = [moves[k : k + MOVE_CHUNK] for k in range(0, len(moves), MOVE_CHUNK)]
        list(self._pool.map(self.objects.move_objects, chunks))
        for n in names:
            staged.pop(n, None)

    def _close(self, rec: Record, tlog: TableLog) -> None:
        """Move a finished record, then its outcomes, to ``commit-archive/``."""
        self._renew()
        self.objects.move_object(rec.name, self._archived(rec.table, rec.name, rec.created))
        for outcome, marker in tlog.outcomes.get(rec.key, {}).items():
            file = marker.name.rpartition("/")[2]
            if outcome == "done" and rec.events is not None:  # what it loaded, in the name (see commitlog)
                file = f"{rec.key}.e{rec.events}.b{rec.nbytes}.done"
            self.objects.move_object(marker.name, self._archived(rec.table, file, rec.created))

    def _archived(self, table: str, name: str, created: float) -> str:
        day = time.strftime("%Y-%m-%d", time.gmtime(created))
        return self.layout.commit_archive(table, day) + name.rpartition("/")[2]


def _about(rec: Record) -> dict:
    """A log line's fields for a line about ``rec``'s job."""
    return fields(rec.table, job_id=rec.job_id, attempt=rec.attempt)


def _since_boot() -> float:
    """Seconds on a clock that keeps counting while the machine sleeps (Linux), else monotonic."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


def _eligible(name: str, eligible: set[str]) -> bool:
    """``name`` was staged when the commit began, or is a half (of a half...) of one that was."""
    stem = name.removesuffix(".parquet")
    while True:
        if f"{stem}.parquet" in eligible:
            return True
        if "~" not in stem:
            return False
        stem = stem.rpartition("~")[0]


def _check_sources(outcome: JobOutcome, uris: list[str]) -> None:
    """Adopt an existing job only if it loads exactly our objects."""
    sources = outcome.source_uris
    if sources is not None and sorted(sources) != sorted(uris):
        raise ObjectConflictError(
            f"load job {outcome.job_id} exists but loads other objects "
            f"({len(sources)} source URIs, not ours); refusing to adopt it"
        )
