"""The drain: buffer -> Parquet -> GCS -> BigQuery load job -> ack, exactly once.

``Drainer.drain_once()`` does all the work and returns a report; the CLI
and the scheduler are thin layers over it. Each step is recorded in the
buffer file (see :mod:`.ledger`) before the next one starts, and each is
safe to repeat, so a drain killed at any instant is finished by the next
one with nothing lost and nothing loaded twice:

1. seal: unsealed rows of each stream become batches (fixed seq ranges);
2. stage: a batch becomes a deterministic local Parquet file;
3. upload: ``if_generation_match=0``; a 412 with matching size and crc32c
   means an earlier attempt already uploaded it;
4. group: uploaded batches of one table are recorded as one load, whose job
   id derives from the batches, before anything is submitted;
5. load: look the job id up first (a 409 on insert means the same); adopt
   an existing job's outcome; every pending load is submitted before the
   drain waits for any; a transient failure retries under the next attempt
   number; a data failure quarantines the batch;
6. ack: delete the batch's rows and mark it loaded in one transaction.
"""

from __future__ import annotations

import logging
import resource
import sqlite3
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bqspool.buffer import store
from bqspool.schemas import SchemaSet
from bqspool.schemas.errors import BackendUnavailableError, ObjectConflictError

from . import faults, ledger
from .gcs import crc32c_of
from .stage import Stager, read_batch_payloads

if TYPE_CHECKING:  # the drain itself never imports a cloud SDK
    from .bq import JobOutcome

log = logging.getLogger("bqspool.loader")

MAX_TRANSIENT_ATTEMPTS = 5  # failed load jobs count against the table's daily quota
NEAR_QUOTA = 0.8
# BigQuery allows 5 metadata updates (load jobs included) per 10 s per table.
PACE_JOBS, PACE_WINDOW_S = 5, 10.0


@dataclass
class DrainReport:
    events_loaded: int = 0
    batches_loaded: int = 0
    jobs_submitted: int = 0
    quarantined: list[str] = field(default_factory=list)
    deferred: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0  # of this process so far, for operators watching memory

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    VmHWM where /proc has it: ru_maxrss survives exec, so a loader started
    from a big parent process would report the parent's size.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Progress:
    """A progress bar on a terminal, periodic log lines elsewhere."""

    def __init__(self, total: int, enabled: bool = True, every_s: float = 5.0):
        self.total, self.done = total, 0
        self.start = self.last = time.monotonic()
        self.every_s = every_s
        self.bar = None
        if enabled and total and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="ev", desc="draining", unit_scale=True, leave=False)
        self.enabled = enabled and total > 0

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            rate = self.done / max(self.last - self.start, 1e-9)
            log.info("drained %d of %d events (%.0f/s)", self.done, self.total, rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Drainer:
    """Drains one buffer file into one dataset.

    ``objects`` is an object store (``upload(name, path, size, crc32c)``,
    ``uri(name)``) and ``warehouse`` a warehouse (``get_job``,
    ``start_load``, ``wait``): the drain never imports a cloud SDK itself.
    """

    def __init__(
        self,
        buffer_path: str | Path,
        schemas: SchemaSet,
        objects,
        warehouse,
        *,
        prefix: str = "bqspool",
        batch_rows: int = 500_000,
        batch_bytes: int = 256 * 1024 * 1024,
        per_job: int = 500,
        quota_per_table_day: int = 1000,
        lease_seconds: float = 120.0,
        staging_dir: str | Path | None = None,
        progress: bool = True,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.path = Path(buffer_path)
        self.schemas = schemas
        self.objects = objects
        self.warehouse = warehouse
        self.prefix = prefix
        self.batch_rows, self.batch_bytes, self.per_job = batch_rows, batch_bytes, per_job
        self.quota = quota_per_table_day
        self.lease_seconds = lease_seconds
        self.staging = Path(staging_dir) if staging_dir else self.path.with_name(self.path.name + ".staging")
        self.progress_enabled = progress
        self.should_stop = should_stop
        self.holder = ledger.new_holder()
        self._stagers: dict[str, Stager] = {}
        self.clock, self.sleep = clock, sleep
        self._recent_jobs: dict[str, deque[float]] = {}

    # -- the whole drain ----------------------------------------------------

    def drain_once(self) -> DrainReport:
        """Drain everything pending now. Raises LeaseHeldError if another
        loader is at it, BackendUnavailableError if GCS/BigQuery stay down."""
        started = time.monotonic()
        report = DrainReport()
        _, in_use = store.open_file(self.path, check="none")
        conn = store.connect(self.path, synchronous="FULL")
        # Some SQLite builds default to secure_delete=ON, which zeroes every
        # page an ack frees and so writes (and fsyncs) the loaded data a
        # second time. FAST zeroes what costs no extra I/O; the freed pages
        # go back to the filesystem in _housekeeping right after.
        conn.execute("PRAGMA secure_delete = FAST")
        try:
            ledger.acquire_lease(conn, self.holder, self.lease_seconds)
            try:
                self._drain(conn, report)
            finally:
                ledger.release_lease(conn, self.holder)
            self._housekeeping(conn)
        finally:
            conn.close()
            store.release(in_use)
        report.seconds = round(time.monotonic() - started, 3)
        report.peak_rss_mb = peak_rss_mb()
        if report.events_loaded or report.quarantined or report.deferred:
            log.info("drain: %d events in %d batches loaded with %d jobs in %.1fs%s%s",
                     report.events_loaded, report.batches_loaded, report.jobs_submitted, report.seconds,
                     f"; quarantined {report.quarantined}" if report.quarantined else "",
                     f"; deferred {report.deferred}" if report.deferred else "")
        return report

    def _renew(self, conn: sqlite3.Connection) -> None:
        ledger.acquire_lease(conn, self.holder, self.lease_seconds)

    def _drain(self, conn: sqlite3.Connection, report: DrainReport) -> None:
        buffer_id = conn.execute("SELECT value FROM meta WHERE key = 'buffer_id'").fetchone()[0]
        streams = [r[0] for r in conn.execute("SELECT DISTINCT stream FROM events")]
        for stream in streams:
            if stream in self.schemas:
                ledger.seal(conn, stream, buffer_id, self.prefix, self.batch_rows, self.batch_bytes)
            else:
                log.error("stream %r has pending events but no table in the schema set; not draining it", stream)
        faults.hit("after_seal")
        pending = [b for b in ledger.batches(conn) if b.state in ("sealed", "staged", "uploaded")]
        progress = Progress(sum(b.rows for b in pending), self.progress_enabled)
        try:
            for b in pending:
                if self.should_stop():
                    return
                if b.state in ("sealed", "staged"):
                    self._stage_and_upload(conn, b, report)
                    self._renew(conn)
            while not self.should_stop():
                self._group(conn, report)
                todo = ledger.loads(conn, ("pending",))
                if not todo:
                    break
                # Submit every load before waiting for any: BigQuery runs
                # them side by side, so a drain over many tables waits about
                # as long as its slowest job rather than the sum of them all.
                running = []
                for load in todo:
                    if self.should_stop():
                        break
                    outcome = self._submit(conn, load, report)
                    if outcome is not None:
                        running.append((load, outcome))
                    self._renew(conn)
                for load, outcome in running:  # submitted jobs run anyway: finish them even when stopping
                    self._finish(conn, load, outcome, report, progress)
                    self._renew(conn)
                if not running:
                    break  # all deferred: nothing changes until the budget frees up
                if self.should_stop():
                    return
        finally:
            progress.close()

    # -- steps --------------------------------------------------------------

    def _stager(self, stream: str) -> Stager:
        if stream not in self._stagers:
            self._stagers[stream] = Stager(self.schemas[stream])
        return self._stagers[stream]

    def _stage_file(self, conn: sqlite3.Connection, b: ledger.Batch) -> Path:
        self.staging.mkdir(parents=True, exist_ok=True)
        path = self.staging / f"{b.batch_id}.parquet"
        if not path.exists():
            self._stager(b.stream).write(read_batch_payloads(conn, b.stream, b.seq_lo, b.seq_hi), path)
        return path

    def _stage_and_upload(self, conn: sqlite3.Connection, b: ledger.Batch, report: DrainReport) -> None:
        path = self._stage_file(conn, b)
        size, crc = path.stat().st_size, crc32c_of(path)
        if b.state == "sealed":
            ledger.mark_staged(conn, b.batch_id, size, crc)
            faults.hit("after_stage")
        try:
            self.objects.upload(b.object_name, path, size, crc)
        except ObjectConflictError as exc:
            self._quarantine(conn, b, str(exc), report)
            return
        faults.hit("after_upload")
        ledger.mark_uploaded(conn, b.batch_id)
        path.unlink(missing_ok=True)

    def _quarantine(self, conn: sqlite3.Connection, b: ledger.Batch, error: str, report: DrainReport) -> None:
        ledger.quarantine(conn, b.batch_id, error)
        report.quarantined.append(b.batch_id)
        log.error("batch %s quarantined: %s", b.batch_id, error)

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
                log.warning("table %s: %d load jobs in the last 24h reach the budget of %d; deferring %d batches",
                            stream, used, self.quota, len(items))
                continue
            per_job = self.per_job
            if used >= NEAR_QUOTA * self.quota:
                per_job = 10_000  # as many files per job as BigQuery takes
                log.warning("table %s: %d of %d load jobs used in 24h; grouping up to %d batches per job",
                            stream, used, self.quota, per_job)
            solo = [[b] for b in items if b.solo]
            shared = [b for b in items if not b.solo]
            groups = solo + [shared[i:i + per_job] for i in range(0, len(shared), per_job)]
            if len(groups) > remaining:
                report.deferred[stream] = f"{len(groups) - remaining} load groups wait for quota"
                groups = groups[:remaining]
            for g in groups:
                ledger.group(conn, stream, [b.batch_id for b in g])
        faults.hit("after_group")

    def _submit(self, conn: sqlite3.Connection, load: ledger.Load, report: DrainReport) -> JobOutcome | None:
        """Start ``load``'s job, or adopt the job its id names already.

        Returns None when the table's load budget is used up (deferred).
        """
        outcome = self.warehouse.get_job(load.job_id)
        if outcome is None:
            if ledger.jobs_last_day(conn, load.stream) >= self.quota:
                report.deferred[load.stream] = "load job budget used"
                return None
            self._pace(load.stream)
            ledger.record_submission(conn, load)
            uris = [self.objects.uri(b.object_name) for b in ledger.load_batches(conn, load.load_id)]
            outcome = self.warehouse.start_load(load.job_id, load.stream, uris)
            report.jobs_submitted += 1
            faults.hit("after_submit")
        return outcome

    def _finish(self, conn: sqlite3.Connection, load: ledger.Load, outcome: JobOutcome, report: DrainReport,
                progress: Progress) -> None:
        """Wait for ``load``'s job, then ack it, retry it or hold its data back."""
        members = ledger.load_batches(conn, load.load_id)
        while True:
            if not outcome.done:
                outcome = self.warehouse.wait(load.job_id)
            if not outcome.done:
                raise BackendUnavailableError(f"load job {load.job_id} did not finish in time")
            faults.hit("after_job_done")
            if outcome.error is None:
                acked = ledger.ack(conn, load, fault=faults.hit)
                faults.hit("after_ack")
                report.events_loaded += acked
                report.batches_loaded += len(members)
                progress.advance(sum(b.rows for b in members))
                return
            error = f"{outcome.error.get('reason')}: {outcome.error.get('message')}"
            if outcome.transient:
                if load.attempt + 1 >= MAX_TRANSIENT_ATTEMPTS:
                    raise BackendUnavailableError(f"load job for {load.stream} failed {load.attempt + 1} times: {error}")
                log.warning("load job %s failed transiently (%s); retrying as attempt %d", load.job_id, error,
                            load.attempt + 1)
                load = ledger.next_attempt(conn, load, error)
                retried = self._submit(conn, load, report)
                if retried is None:
                    return
                outcome = retried
                continue
            held = ledger.fail_load(conn, load, error)
            if held:
                report.quarantined += [b.batch_id for b in held]
                log.error("batch %s quarantined: load job %s rejected its data: %s", held[0].batch_id,
                          load.job_id, error)
            else:
                log.warning("load job %s for %d batches rejected its data (%s); loading them one by one to "
                            "find the bad one", load.job_id, len(members), error)
            return

    def _pace(self, stream: str) -> None:
        """Wait, if needed, so a table never gets more than PACE_JOBS jobs per
        PACE_WINDOW_S: past that BigQuery answers rateLimitExceeded, and the
        failed job still counts against the daily quota."""
        recent = self._recent_jobs.setdefault(stream, deque())
        now = self.clock()
        while recent and now - recent[0] >= PACE_WINDOW_S:
            recent.popleft()
        if len(recent) >= PACE_JOBS:
            wait = PACE_WINDOW_S - (now - recent[0])
            log.info("table %s: %d load jobs in %.0fs; waiting %.1fs", stream, len(recent), PACE_WINDOW_S, wait)
            self.sleep(wait)
            recent.popleft()
            now = self.clock()
        recent.append(now)

    def _housekeeping(self, conn: sqlite3.Connection) -> None:
        # Give the space of acked rows back: free pages to the filesystem,
        # then checkpoint and truncate the WAL. A short busy timeout keeps
        # appenders from waiting on us; if they are busy, the next drain
        # finishes the job.
        try:
            store.release_free_pages(conn)
            conn.execute("PRAGMA busy_timeout = 200")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.OperationalError as exc:
            log.debug("housekeeping skipped: %s", exc)
        if self.staging.exists():
            live = {b.batch_id for b in ledger.batches(conn) if b.state in ("sealed", "staged")}
            for f in self.staging.iterdir():
                if f.name.split(".parquet")[0] not in live:
                    f.unlink(missing_ok=True)
