"""The drain: buffer -> Parquet -> GCS -> BigQuery load job -> ack, exactly once.

``Drainer.drain_once()`` does all the work and returns a report; the CLI
and the scheduler are thin layers over it. Each step is recorded in the
buffer file (see :mod:`.ledger`) before the next one starts, each is safe
to repeat, and each is fenced by the drain lease (see :mod:`.lease`), so a
drain killed at any instant is finished by the next one with nothing lost
and nothing loaded twice, and a drain paused past its lease stops at its
next step without changing anything:

1. seal: unsealed rows of each stream become batches (fixed seq ranges);
2. stage: a batch becomes a deterministic local Parquet file, whose digest
   goes into its object name; a batch that cannot be staged is quarantined
   with its reason and the others go on;
3. upload: ``if_generation_match=0``; a 412 with matching size and crc32c
   means an earlier attempt already uploaded it;
4. group: uploaded batches of one table are recorded as one load, whose job
   id derives from the objects' names, before anything is submitted;
5. load: look the job id up first (a 409 on insert means the same); adopt
   an existing job's outcome only if it loaded exactly our objects; every
   pending load is submitted before the drain waits for any; a transient
   failure retries under the next attempt number; a data failure is
   narrowed down to the bad rows (:mod:`.bisect`);
6. ack: delete the batch's rows and mark it loaded in one transaction.

On a full disk the drain releases the buffer's reserve file and works in
small batches until the acks have made room (see ``store.RESERVE_BYTES``).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bqspool.buffer import opening, rows, store
from bqspool.schemas import SchemaSet
from bqspool.schemas.errors import DiskFullError, LeaseLostError, ObjectConflictError

from . import faults, ledger
from .loads import LoadSteps, round_robin
from .progress import Progress, peak_rss_mb
from .stage import Stager, read_batch_payloads

if TYPE_CHECKING:
    from .interfaces import ObjectStore, Warehouse

log = logging.getLogger("bqspool.loader")

TIGHT_BATCH_BYTES = 256 * 1024  # batch size while the disk is full: its Parquet file must fit the reserve


@dataclass
class DrainReport:
    events_loaded: int = 0
    batches_loaded: int = 0
    jobs_submitted: int = 0
    quarantined: list[str] = field(default_factory=list)
    dead_lettered: int = 0  # events a load job rejected, found by bisecting their batch
    deferred: dict[str, str] = field(default_factory=dict)
    undrainable: dict[str, int] = field(default_factory=dict)  # streams with pending events but no table
    seconds: float = 0.0
    peak_rss_mb: float = 0.0  # of this process so far, for operators watching memory

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _staging_error(exc: BaseException) -> bool:
    """Whether staging failed because of the batch's rows (quarantine it), not the host."""
    if isinstance(exc, OSError):  # disk full, I/O: the host's, retry later
        return False
    return isinstance(
        exc,
        (
            ValueError,
            TypeError,
            KeyError,
            ArithmeticError,
            UnicodeError,
            sqlite3.DataError,
            sqlite3.OperationalError,
            sqlite3.IntegrityError,
        ),
    ) or type(exc).__module__.startswith("pyarrow")


class Drainer(LoadSteps):
    """Drains one buffer file into one dataset.

    ``objects`` and ``warehouse`` implement the interfaces of
    :mod:`.interfaces` (the Google adapters, or the fakes of
    :mod:`.testing`): the drain never imports a cloud SDK itself. Its
    budget and pacing are the configured ones, capped by the warehouse's
    declared ``limits``.
    """

    def __init__(
        self,
        buffer_path: str | Path,
        schemas: SchemaSet,
        objects: ObjectStore,
        warehouse: Warehouse,
        *,
        prefix: str = "bqspool",
        batch_rows: int = 500_000,
        batch_bytes: int = 256 * 1024 * 1024,
        per_job: int = 500,
        quota_per_table_day: int = 1000,
        lease_seconds: float = 120.0,
        pace_jobs: int | None = None,
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
        self.batch_rows, self.batch_bytes = batch_rows, batch_bytes
        limits = warehouse.limits
        self.quota = min(quota_per_table_day, limits.jobs_per_table_day)
        self.per_job = min(per_job, limits.uris_per_job)
        self.max_per_job = limits.uris_per_job
        self.lease_seconds = lease_seconds
        self.pace_jobs = pace_jobs or limits.jobs_per_table_10s
        self.staging = Path(staging_dir) if staging_dir else self.path.with_name(self.path.name + ".staging")
        self.progress_enabled = progress
        self.should_stop = should_stop
        self.holder = ledger.new_holder()
        self.fence: ledger.Fence | None = None
        self._stagers: dict[str, Stager] = {}
        self.clock, self.sleep = clock, sleep
        self._recent_jobs: dict[str, deque[float]] = {}
        self._tight = False

    # -- the whole drain ----------------------------------------------------

    def drain_once(self) -> DrainReport:
        """Drain everything pending now. Raises LeaseHeldError if another
        loader is at it, LeaseLostError if this one lost its lease midway,
        BackendUnavailableError if GCS/BigQuery stay down, DiskFullError if
        the disk stays full."""
        started = time.monotonic()
        report = DrainReport()
        self._tight = False
        _, in_use = opening.open_file(self.path, check="none")
        conn = store.connect(self.path, synchronous="FULL")
        # Some SQLite builds default to secure_delete=ON, which zeroes every
        # page an ack frees and so writes (and fsyncs) the loaded data a
        # second time. FAST zeroes what costs no extra I/O; the freed pages
        # go back to the filesystem in _housekeeping right after.
        conn.execute("PRAGMA secure_delete = FAST")
        try:
            self.fence = self._make_room(conn, lambda: self._take_lease(conn))
            try:
                self._make_room(conn, lambda: self._drain(conn, report))
            except Exception as exc:
                self._lost_lease_behind(conn, exc)
                raise
            finally:
                ledger.release_lease(conn, self.fence)
                self.fence = None
            self._housekeeping(conn)
        finally:
            conn.close()
            opening.release(in_use)
        report.seconds = round(time.monotonic() - started, 3)
        report.peak_rss_mb = peak_rss_mb()
        if report.events_loaded or report.quarantined or report.deferred or report.dead_lettered:
            log.info(
                "drain: %d events in %d batches loaded with %d jobs in %.1fs%s%s%s",
                report.events_loaded,
                report.batches_loaded,
                report.jobs_submitted,
                report.seconds,
                f"; quarantined {report.quarantined}" if report.quarantined else "",
                f"; {report.dead_lettered} rejected events dead-lettered" if report.dead_lettered else "",
                f"; deferred {report.deferred}" if report.deferred else "",
            )
        return report

    def _make_room(self, conn: sqlite3.Connection, step: Callable):
        """Run ``step``; on a full disk, release the reserve once and run it again in small batches."""
        try:
            return step()
        except DiskFullError:
            if self._tight or not opening.release_reserve(self.path):
                raise
            log.warning(
                "buffer disk is full: released the %d-byte reserve of %s and draining in small batches to make room",
                store.RESERVE_BYTES,
                self.path,
            )
            self._tight = True
            # The WAL's new pages into the database, then the WAL truncated:
            # the reserve is sized for this, and it frees the WAL's space.
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.OperationalError as exc:
                log.warning("checkpoint on a full disk failed: %s", exc)
            return step()

    def _take_lease(self, conn: sqlite3.Connection) -> ledger.Fence:
        ledger.prepare(conn)  # the loader's tables up to this version first
        return ledger.acquire_lease(conn, self.holder, self.lease_seconds, self.path)

    def _lost_lease_behind(self, conn: sqlite3.Connection, exc: Exception) -> None:
        """Raise LeaseLostError from ``exc`` if the lease changed hands meanwhile.

        A loader paused in the middle of a step resumes to find the world
        moved on: its staged file uploaded and removed by the loader that
        took over, its HTTP connection gone. What it then trips over is a
        symptom; the lost lease is the cause, and the retryable exit.
        """
        if self.fence is None or isinstance(exc, LeaseLostError):
            return
        try:
            with store.transaction(conn):
                ledger.check_fence(conn, self.fence)
        except LeaseLostError as lost:
            raise lost from exc
        except Exception:
            return

    def _renew(self, conn: sqlite3.Connection) -> None:
        """Check that we still hold the lease, and extend it (LeaseLostError if not)."""
        assert self.fence is not None
        ledger.renew_lease(conn, self.fence, self.lease_seconds)

    def _drain(self, conn: sqlite3.Connection, report: DrainReport) -> None:
        buffer_id = conn.execute("SELECT value FROM meta WHERE key = 'buffer_id'").fetchone()[0]
        batch_bytes = min(self.batch_bytes, TIGHT_BATCH_BYTES) if self._tight else self.batch_bytes
        streams = rows.streams_pending(conn)
        for stream, n in streams:
            if stream in self.schemas:
                ledger.seal(conn, stream, buffer_id, self.prefix, self.batch_rows, batch_bytes, self.fence)
            else:
                report.undrainable[stream] = n
                log.error("stream %r has %d pending events but no table in the schema set; not draining it", stream, n)
        faults.hit("after_seal")
        pending = [b for b in ledger.batches(conn) if b.state in ledger.LIVE_STATES]
        progress = Progress(sum(b.rows for b in pending if b.parent is None), self.progress_enabled)
        try:
            while not self.should_stop():
                for b in ledger.batches(conn):
                    if b.state in ("sealed", "staged"):
                        if self.should_stop():
                            return
                        self._renew(conn)
                        self._stage_and_upload(conn, b, report)
                self._group(conn, report)
                todo = round_robin(ledger.loads(conn, ("pending",)))
                if not todo:
                    break
                # Submit every load before waiting for any: BigQuery runs
                # them side by side, so a drain over many tables waits about
                # as long as its slowest job rather than the sum of them all.
                running = []
                for load in todo:
                    if self.should_stop():
                        break
                    self._renew(conn)
                    outcome = self._submit(conn, load, report)
                    if outcome is not None:
                        running.append((load, outcome))
                for load, outcome in running:  # submitted jobs run anyway: finish them even when stopping
                    self._renew(conn)
                    self._finish(conn, load, outcome, report, progress)
                if not running:
                    break  # all deferred: nothing changes until the budget frees up
        finally:
            progress.close()

    # -- steps --------------------------------------------------------------

    def _stager(self, stream: str) -> Stager:
        if stream not in self._stagers:
            self._stagers[stream] = Stager(self.schemas[stream])
        return self._stagers[stream]

    def _stage_file(self, conn: sqlite3.Connection, b: ledger.Batch) -> Path:
        # Owner-only, like the buffer: the staged files hold the same data,
        # and they stay after a crash or an outage.
        self.staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.staging, 0o700)
        path = self.staging / f"{b.batch_id}.parquet"
        if not path.exists():
            chunks = (
                ["\n".join(ledger.event_lines(conn, b))]
                if b.parent is not None
                else read_batch_payloads(conn, b.stream, b.seq_lo, b.seq_hi)
            )
            self._stager(b.stream).write(chunks, path)
        return path

    def _stage_and_upload(self, conn: sqlite3.Connection, b: ledger.Batch, report: DrainReport) -> None:
        fresh = ledger.batch(conn, b.batch_id)  # as it is now, not as the list we started from says
        if fresh is None or fresh.state not in ("sealed", "staged"):
            return
        b = fresh
        try:
            path = self._stage_file(conn, b)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(f"no room to stage batch {b.batch_id} in {self.staging}") from exc
            raise
        except Exception as exc:
            if not _staging_error(exc):
                raise
            # The parser's message may quote the row: keep it at debug level.
            log.debug("staging batch %s failed: %r", b.batch_id, exc)
            self._quarantine(
                conn,
                b,
                f"cannot be staged ({type(exc).__name__}): a stored row does not fit the "
                f"table {b.stream} (a column removed from the schema set, or a damaged row)",
                report,
            )
            return
        if b.state == "sealed":
            size = path.stat().st_size
            name = ledger.mark_staged(conn, b, size, _digest(path), self.fence)
            if name is None:
                return
            b = dataclasses.replace(b, state="staged", object_size=size, object_name=name)
            faults.hit("after_stage")
        self._renew(conn)
        try:
            stored = self.objects.upload(b.object_name, path)
        except ObjectConflictError as exc:
            self._quarantine(conn, b, str(exc), report)
            return
        faults.hit("after_upload")
        ledger.mark_uploaded(conn, b.batch_id, stored.checksum, self.fence)
        path.unlink(missing_ok=True)

    def _quarantine(self, conn: sqlite3.Connection, b: ledger.Batch, error: str, report: DrainReport) -> None:
        if ledger.quarantine(conn, b.batch_id, error, self.fence):
            report.quarantined.append(b.batch_id)
            log.error("batch %s quarantined: %s", b.batch_id, error)

    def _housekeeping(self, conn: sqlite3.Connection) -> None:
        # Give the space of acked rows back: free pages to the filesystem,
        # then checkpoint and truncate the WAL. A short busy timeout keeps
        # appenders from waiting on us; if they are busy, the next drain
        # finishes the job. Then put the disk reserve back if it was used.
        try:
            store.release_free_pages(conn)
            conn.execute("PRAGMA busy_timeout = 200")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except (sqlite3.OperationalError, DiskFullError) as exc:
            log.debug("housekeeping skipped: %s", exc)
        opening.ensure_reserve(self.path)
        if self.staging.exists():
            live = {b.batch_id for b in ledger.batches(conn) if b.state in ("sealed", "staged")}
            for f in self.staging.iterdir():
                if f.name.split(".parquet")[0] not in live:
                    f.unlink(missing_ok=True)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
