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
   none past it, and no more partitions than a job may modify (an object
   wider than that is split first); each record is created before its job;
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

import logging
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from bqspool.schemas.errors import BackendUnavailableError, PreconditionFailedError

from .. import billing, faults, partitions
from ..interfaces import LoadJobs, ObjectStore, StoredObject, find_object
from ..layout import Layout, RecordName, is_table_name
from ..logs import fields
from ..process import new_holder, peak_rss_mb, since_boot
from ..settings import DEFAULTS, Settings
from . import bucket_lease, grouping
from .budget import PACE_WINDOW_S, Budget
from .commitlog import LogReader, Record, TableLog
from .jobs import Jobs
from .report import CommitReport
from .screen import Screen
from .tidy import Tidier

if TYPE_CHECKING:
    from bqspool.schemas.definition import Partitioning

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
        tables: Collection[str] | None = None,  # the schema set's: objects of others are quarantined
        partitioning: Mapping[str, Partitioning | None] | None = None,  # by table: to split wide objects
        should_stop: Callable[[], bool] = lambda: False,
        on_loaded: Callable[[list[str]], None] | None = None,  # told the objects of each job done (progress)
        clock: Callable[[], float] = time.time,  # this host's: only to check it against the store's
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.objects, self.settings, self.on_loaded = objects, settings, on_loaded
        self.layout = Layout(settings.prefix)
        self.reader = LogReader(objects, self.layout)
        # Every time the committer compares is on the store's clock (objects'
        # times; ``now``): nothing depends on hosts' clocks agreeing.
        self._offset = 0.0  # this host's clock minus the store's, measured at each commit's start
        self.budget = Budget(settings, warehouse.limits, self.reader, lambda: self.now())
        self.should_stop = should_stop
        self.clock, self.sleep, self.holder = clock, sleep, new_holder()
        self.lease: bucket_lease.BucketLease | None = None
        # Late-bound: ``_renew`` is what each step calls before it changes anything.
        self.screen = Screen(objects, self.layout, tables)
        self.tidier = Tidier(objects, self.layout, lambda: self._renew(), self.reader, self.screen.remember)
        self.tidier.splitter.partitioning = partitioning or {}
        self.jobs = Jobs(objects, warehouse, self.layout, self.reader, lambda: self._renew(), on_loaded)
        self._token: int | None = None  # the lease's token at this committer's last commit
        self._renewed, self._report = 0.0, CommitReport()  # when it last wrote the lease; this commit's report
        self.left_work = True  # the last commit left work (deferred, waiting), or none ran yet: do not skip
        self._budgets_counted = False  # each table's jobs in 24 h, for the metrics, once a process
        self.count_quiet_tables = False  # `run` sets it (metrics of every table); a listing each, a one-shot skips
        self._eligible: dict[str, set[str]] = {}  # per table: what this commit takes on
        self._staged: dict[str, dict[str, StoredObject]] = {}  # per table: what this commit knows is staged

    # -- the whole commit -------------------------------------------------------

    @property
    def warehouse(self) -> LoadJobs:
        """The warehouse the jobs run in (one reference, the jobs')."""
        return self.jobs.warehouse

    @warehouse.setter
    def warehouse(self, warehouse: LoadJobs) -> None:
        self.jobs.warehouse = warehouse

    def commit_once(self) -> CommitReport:
        """Load everything shipped now. LeaseHeldError if another committer is at
        it, LeaseLostError if this one lost its lease midway, BackendUnavailableError
        if GCS or BigQuery stay down. Safe to kill at any instant.

        A commit with nothing to do costs one listing: when nothing is staged
        and this committer's last commit left nothing behind, it takes no lease."""
        started = time.monotonic()
        report = self._report = CommitReport(budget=self.budget.quota)
        counts, calls = self.objects.requests, self.warehouse.requests
        before, calls_before = counts.snapshot(), calls.snapshot()
        try:
            with billing.spending(billing.SHARED):
                logs: dict[str, TableLog] = {}
                if self._idle():
                    report.idle = True
                else:
                    logs = self._commit(report)
                if not self._budgets_counted:  # once a process: the tables in the log, and quiet ones if asked
                    quiet = set(self.screen.tables or ()) if self.count_quiet_tables else set()
                    self.budget.count(sorted(set(logs) | quiet), logs, report)
                    self._budgets_counted = True
        finally:
            report.requests, report.bigquery = counts.since(before), calls.since(calls_before)
        report.seconds, report.peak_rss_mb = round(time.monotonic() - started, 3), peak_rss_mb()
        self.left_work = bool(report.deferred or report.quarantined or any(report.waiting.values()))
        if report.jobs_submitted or report.objects_loaded or report.quarantined or report.deferred:
            log.debug("%s", report.line())  # `run` logs each cycle's line at info (see scheduler)
        return report

    def _idle(self) -> bool:
        """Nothing staged, and nothing left by this committer's last commit, or (its first) nothing in the log."""
        if self.objects.list_objects(self.layout.staged()):
            return False
        bucket_lease.check_skew(self.clock() - self.objects.now(), self.settings.max_clock_skew)  # the listing's Date
        # A first commit looks at the log too: a committer may have died in the middle of one.
        return not self.left_work or not self.objects.list_objects(self.layout.commits())

    def _commit(self, report: CommitReport) -> dict[str, TableLog]:
        """The commit under the lease (see :meth:`commit_once`); the commit log as it began."""
        self._check_clock()
        self._renewed = since_boot()  # before the request: its time counts against the lease
        self.lease = bucket_lease.acquire(self.objects, self.layout.lease, self.holder, self.settings.lease_seconds)
        # What the last holder sent after its last summary: recorded by this commit's first.
        self.objects.requests.give_back(billing.SHARED, self.lease.carried)
        if self._token is None or self.lease.token not in (self._token, self._token + 1):
            # Another committer held the lease since our last commit: what we read of the
            # archive and the closed log may be behind. Alone, we kept both up to date.
            self.screen.forget()
            self.reader.forget()
        self._token = self.lease.token
        if self.lease.written:  # the store's time of our write, to the millisecond: a finer offset than a Date
            self._offset = self.clock() - self.lease.written
        try:
            # One listing of everything staged names the tables, fixes what this
            # commit takes on, and serves the first round: each is a walk of the bucket.
            staged = self._staged_by_table(report)
            logs = self.reader.tables()
            tables = sorted(set(staged) | set(logs))
            self._commit_tables([t for t in tables if is_table_name(t)], staged, logs, report)
        finally:
            self.jobs.track(0)
            self.tidier.archiver.discard()
            self._release()
        return {t: logs.get(t) or TableLog() for t in tables}

    def _release(self) -> None:
        """Give the lease up, leaving in it what this commit sent since its last
        summary (the release's own write included), for the next holder to record."""
        assert self.lease is not None
        counts = self.objects.requests
        unrecorded = billing.add_ops(counts.take(*(t for t in counts.untaken() if t != billing.SHIP)), {"insert": 1})
        counts.prepay(billing.SHARED, {"insert": 1})
        if not bucket_lease.release(self.objects, self.lease, unrecorded):
            counts.give_back(billing.SHARED, unrecorded)  # this committer's next summary records them
        self.lease = None

    def _staged_by_table(self, report: CommitReport) -> dict[str, list[StoredObject]]:
        """Everything staged, per table, once paths the grammar does not hold are quarantined."""
        staged = self.layout.by_table(self.objects, self.layout.staged())
        everything = [o.name for objs in staged.values() for o in objs]
        strays = set(self.screen.strays(everything))
        report.quarantined += sorted(strays)
        return {t: kept for t, objs in staged.items() if (kept := [o for o in objs if o.name not in strays])}

    def _check_clock(self) -> None:
        """ClockSkewError if this host's clock is off the store's by more than the margin
        (see :func:`.bucket_lease.clock_offset`)."""
        skew = self.settings.max_clock_skew
        self._offset = bucket_lease.clock_offset(self.objects, self.layout.lease, self.clock, skew)

    def now(self) -> float:
        """The store's clock, carried forward on this committer's own: what pacing, the
        budget and delays are measured by."""
        return self.clock() - self._offset

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
        bucket_lease.renew(self.objects, self.lease, self.settings.lease_seconds)
        self._renewed = since_boot()

    def _commit_tables(
        self,
        tables: list[str],
        staged: dict[str, list[StoredObject]],
        logs: dict[str, TableLog],
        report: CommitReport,
    ) -> None:
        """Rounds over every table at once: pacing waits per table, so one table's
        backlog never holds up another's jobs, and the tables share each wait.

        Each round lists the commit log of every table once (``logs``, the
        first round's), and once more after writing the round's records, for
        the rule's check: listings are class A requests, so a round costs two
        of them however many tables it serves."""
        failures: dict[str, int] = {}  # transient job failures in this commit: a later one starts afresh
        active = list(tables)
        # What was staged when this commit began, and halves split from it: hosts
        # keep shipping meanwhile, and a commit must end; the next one takes the rest.
        self._eligible = {t: {o.name for o in staged.get(t, [])} for t in tables}
        self.jobs.track(sum(len(v) for v in self._eligible.values()))
        self._staged = {t: {o.name: o for o in staged.get(t, [])} for t in tables}
        for i in range(MAX_ROUNDS):
            if not active or self.should_stop():
                break
            started, waits = [], []
            todos: dict[str, list[Record]] = {}
            logs = logs if i == 0 else self.reader.tables()
            for table in list(active):
                with billing.spending(table):
                    todo, wait = self._round(table, logs.get(table) or TableLog(), report)
                if wait:
                    waits.append(wait)
                elif not todo:
                    active.remove(table)
                if todo:
                    todos[table] = todo
            # Submit every job before waiting for any: BigQuery runs them side by side.
            # One fresh listing for the round's records, all written before it (the rule's check).
            fresh = self.reader.tables() if todos else {}
            for table, todo in todos.items():
                with billing.spending(table):
                    for r in todo:  # its archive files are merged while its job runs
                        self.tidier.archiver.prepare(table, r.key, r.created, r.sources, self._staged.get(table, {}))
                    mine = fresh.get(table) or TableLog()
                    started += [(r, out) for r in todo if (out := self.jobs.start(table, r, mine, report)) is not None]
            for rec, outcome in started:
                with billing.spending(rec.table):
                    ended = self.jobs.end(rec, outcome, report)
                if ended == "failed-backend":
                    failures[rec.table] = failures.get(rec.table, 0) + 1
                    if failures[rec.table] >= MAX_TRANSIENT_ATTEMPTS:
                        raise BackendUnavailableError(
                            f"load jobs for {rec.table} failed {failures[rec.table]} times; see the log"
                        )
            if not started and waits:
                wait = min(waits)
                log.info("pacing: waiting %.1fs for a table's 10-s window of load jobs", wait)
                self.sleep(wait)

    def _round(self, table: str, tlog: TableLog, report: CommitReport) -> tuple[list[Record], float]:
        """Tidy ``table`` (its log as this round listed it), then the records to run
        now, and how long pacing holds others back."""
        # The view the last round left, not a fresh listing: objects shipped since
        # are not this commit's to load (see _eligible), and a listing costs.
        staged = self._staged.get(table)
        if staged is None:
            staged = {o.name: o for o in self.objects.list_objects(self.layout.staged(table))}
        if self.tidier.tidy(table, tlog, staged, report):
            # Listed again after a split: it shows the halves the split staged.
            staged = {o.name: o for o in self.objects.list_objects(self.layout.staged(table))}
        self._staged[table] = staged
        report.waiting[table] = len(staged)
        todo = tlog.open()
        used: list[float] | None = None  # the table's jobs in 24 h: read when a record may be written
        if any(tlog.outcome(r.key) == "failed-backend" for r in tlog.latest().values()):
            used = self.budget.used(table, tlog)
            retries, wait = self._next_attempts(table, tlog, used)
            todo += retries
        else:
            wait = 0.0
        if not todo and not wait:
            todo, wait = self._new_records(table, tlog, staged, report, used)
        return todo, wait

    # -- records -------------------------------------------------------------------

    def _new_records(
        self,
        table: str,
        tlog: TableLog,
        staged: dict[str, StoredObject],
        report: CommitReport,
        used: list[float] | None,
    ) -> tuple[list[Record], float]:
        """Group the free staged objects into new records, as the budget and the pacing allow."""
        free, claimed = self._free(table, tlog, staged)
        free, held, gone = self.screen.misfits(table, free, claimed)
        for name in held:
            report.held_back(table, name)
        for name in held + gone:
            staged.pop(name, None)
        if not free:
            return [], 0.0
        used = self.budget.used(table, tlog) if used is None else used
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
        limit = self.warehouse.limits.partitions_per_job
        free = self.tidier.splitter.spread_wide(free, staged, limit, self._renew)
        groups = grouping.groups(tlog, free, per_job, partitions.spans(staged[n] for n in free), limit)
        allowed = self.budget.allow(len(groups), used)
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
                    ship_ops=grouping.ship_ops(staged[n] for n in g if n in staged),
                )
            )
            for g in groups[: allowed.jobs]
        ]
        report.table(table)["jobs_24h"] = len(used) + len(records)  # for the metrics: no listing of their own
        return records, allowed.wait

    def _free(self, table: str, tlog: TableLog, staged: dict[str, StoredObject]) -> tuple[list[str], set[str]]:
        """Staged objects this commit took on that no record claims, and the claimed ones."""
        claimed = {s for r in tlog.claiming() for s in r.sources}
        # A commit whose job failed transiently keeps its objects for its next attempt.
        claimed |= {s for r in tlog.latest().values() if tlog.outcome(r.key) == "failed-backend" for s in r.sources}
        eligible = self._eligible.get(table, set())
        return [n for n in staged if n not in claimed and grouping.eligible(n, eligible)], claimed

    def _next_attempts(self, table: str, tlog: TableLog, used: list[float]) -> tuple[list[Record], float]:
        """A job that failed transiently wrote nothing: its commit's next attempt."""
        due = [r for r in tlog.latest().values() if tlog.outcome(r.key) == "failed-backend"]
        allowed = self.budget.allow(len(due), used)  # a retry is a job like any other
        if allowed.over_budget and self._report.defer(
            table, f"load job budget used: {len(used)} of {self.budget.quota} in the last 24h; retries wait"
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
