"""The drain: buffer -> Parquet -> GCS (ship), then GCS -> BigQuery (commit), exactly once.

A drain is two stages on one path. *Ship* runs on every host, on its own
buffer file; *commit* runs once per dataset, on what every host shipped
(see :mod:`.commit`). ``Drainer.ship_once()`` ships, ``commit_once()``
commits and ``drain_once()`` does both in one process, as a single host
does. Each ship step is recorded in the buffer file (see :mod:`.ledger`)
before the next one starts, each is safe to repeat, and each is fenced by
the buffer's drain lease (see :mod:`.lease`):

1. seal: unsealed rows of each stream become batches (fixed seq ranges),
   each with its object name, which carries a digest of its rows;
2. stage: a batch becomes a deterministic local Parquet file; a batch that
   cannot be staged is quarantined with its reason and the others go on;
3. upload to ``PREFIX/staged/``: ``if_generation_match=0``; a 412 with
   matching size and crc32c means an earlier attempt already uploaded it.
   A batch that was staged before this run may have been uploaded, loaded
   and archived meanwhile: it is looked for in every area first;
4. hand over: the object is the durable copy now, so the batch's rows
   leave the buffer, in the transaction that marks it ``shipped``.

Steps 3 and 4 of one batch run on a second thread while the next batch is
staged (see ``_ship``).

A host never waits for BigQuery: it ships while BigQuery is down. On a full
disk the ship releases the buffer's reserve file and works in small
batches until the hand-overs have made room (see ``store.RESERVE_BYTES``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bqspool.buffer import opening, rows, store
from bqspool.schemas import SchemaSet
from bqspool.schemas.errors import DiskFullError, LeaseLostError, ObjectConflictError

from . import faults, ledger
from .commit import CommitReport, Committer
from .commitlog import Layout, already_handed_over
from .logs import fields
from .progress import Progress, peak_rss_mb
from .stage import Stager, read_batch_payloads

if TYPE_CHECKING:
    from .interfaces import ObjectStore, Warehouse

log = logging.getLogger("bqspool.loader")

TIGHT_BATCH_BYTES = 256 * 1024  # batch size while the disk is full: its Parquet file must fit the reserve


@dataclass
class ShipReport:
    events_shipped: int = 0
    batches_shipped: int = 0
    bytes_shipped: int = 0
    quarantined: list[str] = field(default_factory=list)  # batches that cannot be staged
    undrainable: dict[str, int] = field(default_factory=dict)  # streams with pending events but no table
    per_stream: dict[str, dict[str, int]] = field(default_factory=dict)  # events, batches, quarantined
    seconds: float = 0.0
    # Where ``seconds`` went: "stage" (Parquet), "upload" (with its checks),
    # "handover" (the rows leave the buffer), "housekeeping" (space handed back).
    # Uploads and hand-overs overlap the next stage: the sum can pass ``seconds``.
    step_seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0  # of this process so far, for operators watching memory

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def stream(self, stream: str) -> dict[str, int]:
        """``per_stream``'s figures of ``stream``."""
        return self.per_stream.setdefault(stream, {"events": 0, "batches": 0, "quarantined": 0})

    @contextlib.contextmanager
    def timing(self, step: str) -> Iterator[None]:
        """Add the time the block takes to ``step_seconds[step]``."""
        t = time.monotonic()
        try:
            yield
        finally:
            took = self.step_seconds.get(step, 0.0) + time.monotonic() - t
            self.step_seconds[step] = round(took, 4)


@dataclass
class DrainReport:
    """What one drain did: each stage's report, and the totals a caller checks."""

    ship: ShipReport = field(default_factory=ShipReport)
    commit: CommitReport = field(default_factory=CommitReport)
    seconds: float = 0.0

    @property
    def events_loaded(self) -> int:
        return self.commit.events_loaded

    @property
    def jobs_submitted(self) -> int:
        return self.commit.jobs_submitted

    @property
    def quarantined(self) -> list[str]:
        return self.ship.quarantined + self.commit.quarantined

    @property
    def dead_lettered(self) -> int:
        return self.commit.dead_lettered

    @property
    def deferred(self) -> dict[str, str]:
        return self.commit.deferred

    @property
    def undrainable(self) -> dict[str, int]:
        return self.ship.undrainable

    def as_dict(self) -> dict:
        return {
            "events_loaded": self.events_loaded,
            "jobs_submitted": self.jobs_submitted,
            "quarantined": self.quarantined,
            "dead_lettered": self.dead_lettered,
            "deferred": self.deferred,
            "undrainable": self.undrainable,
            "seconds": self.seconds,
            "ship": self.ship.as_dict(),
            "commit": self.commit.as_dict(),
        }


@dataclass
class Delivered:
    """What delivering one staged batch did (see ``Drainer._deliver``)."""

    batch: ledger.Batch
    events: int | None  # handed over; None if it was not the ship's any more
    timings: dict[str, float] = field(default_factory=dict)  # "upload", "handover"
    conflict: str | None = None  # quarantined: its name holds other bytes


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


class Drainer:
    """Ships one buffer file, and commits what every host shipped, into one dataset.

    ``objects`` and ``warehouse`` implement the interfaces of
    :mod:`.interfaces` (the Google adapters, or the fakes of
    :mod:`.testing`): the drain never imports a cloud SDK itself. A host
    that only ships passes ``warehouse=None``. The commit's budget and
    pacing are the configured ones, capped by the warehouse's ``limits``.
    """

    def __init__(
        self,
        buffer_path: str | Path,
        schemas: SchemaSet,
        objects: ObjectStore,
        warehouse: Warehouse | None,
        *,
        prefix: str = "bqspool",
        batch_rows: int = 65_536,
        batch_bytes: int = 256 * 1024 * 1024,
        per_job: int = 500,
        quota_per_table_day: int = 1000,
        lease_seconds: float = 120.0,
        pace_jobs: int | None = None,
        staging_dir: str | Path | None = None,
        progress: bool = True,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.path = Path(buffer_path)
        self.schemas = schemas
        self.objects = objects
        self.warehouse = warehouse
        self.prefix = prefix
        self.layout = Layout(prefix)
        self.batch_rows, self.batch_bytes = batch_rows, batch_bytes
        self.lease_seconds = lease_seconds
        self.staging = Path(staging_dir) if staging_dir else self.path.with_name(self.path.name + ".staging")
        self.progress_enabled = progress
        self.should_stop = should_stop
        self.holder = ledger.new_holder()
        self.fence: ledger.Fence | None = None
        self._stagers: dict[str, Stager] = {}
        # The delivery thread and its own connection to the buffer (see _ship).
        self._pool: ThreadPoolExecutor | None = None
        self._conn2: sqlite3.Connection | None = None
        # Held by either thread for each write to the buffer and at each fault
        # point: the two never wait on each other inside SQLite (its busy
        # handler sleeps), and a process stopped or killed at a fault point
        # is between the steps of both threads, holding no write lock.
        self._step = threading.Lock()
        self._tight = False
        self.committer = (
            None
            if warehouse is None
            else Committer(
                objects,
                warehouse,
                prefix=prefix,
                per_job=per_job,
                quota_per_table_day=quota_per_table_day,
                pace_jobs=pace_jobs,
                lease_seconds=lease_seconds,
                should_stop=should_stop,
                clock=clock,
                sleep=sleep,
            )
        )

    # -- the stages ---------------------------------------------------------

    def drain_once(self) -> DrainReport:
        """Ship, then commit: what a single host runs. The errors of both."""
        started = time.monotonic()
        report = DrainReport(ship=self.ship_once())
        report.commit = self.commit_once()
        report.seconds = round(time.monotonic() - started, 3)
        return report

    def commit_once(self) -> CommitReport:
        """Load everything shipped under the prefix, by any host (see :class:`.commit.Committer`)."""
        if self.committer is None:
            raise ValueError("this drainer has no warehouse: it only ships")
        return self.committer.commit_once()

    def ship_once(self, deadline: float | None = None) -> ShipReport:
        """Ship everything pending now, or until ``deadline`` (a ``time.monotonic()``
        instant) passes. Raises LeaseHeldError if another loader ships this
        buffer, LeaseLostError if this one lost its lease midway,
        BackendUnavailableError if GCS stays down, DiskFullError if the disk
        stays full."""
        started = time.monotonic()
        report = ShipReport()
        self._tight = False
        _, in_use = opening.open_file(self.path, check="none")
        conn = store.connect(self.path, synchronous="FULL")
        # Some SQLite builds default to secure_delete=ON, which zeroes every
        # page a hand-over frees and so writes (and fsyncs) the data a second
        # time. FAST zeroes what costs no extra I/O; the freed pages go back
        # to the filesystem in _housekeeping right after.
        conn.execute("PRAGMA secure_delete = FAST")
        try:
            self.fence = self._make_room(conn, lambda: self._take_lease(conn))
            try:
                self._make_room(conn, lambda: self._ship(conn, report, deadline))
            except Exception as exc:
                self._lost_lease_behind(conn, exc)
                raise
            finally:
                self._close_delivery()
                ledger.release_lease(conn, self.fence)
                self.fence = None
            # On the way out (a deadline: SIGTERM) the file is not worth compacting:
            # the instance is going, and handing a large backlog's pages back takes seconds.
            with report.timing("housekeeping"):
                self._housekeeping(conn, compact=deadline is None)
        finally:
            conn.close()
            opening.release(in_use)
        report.seconds = round(time.monotonic() - started, 3)
        report.peak_rss_mb = peak_rss_mb()
        if report.batches_shipped or report.quarantined:
            log.info(
                "ship: %d events in %d batches (%d bytes) shipped in %.1fs%s",
                report.events_shipped,
                report.batches_shipped,
                report.bytes_shipped,
                report.seconds,
                f"; quarantined {report.quarantined}" if report.quarantined else "",
            )
        return report

    def _close_delivery(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._conn2 is not None:
            self._conn2.close()
            self._conn2 = None

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
        with self._step:
            ledger.renew_lease(conn, self.fence, self.lease_seconds)

    def _ship(self, conn: sqlite3.Connection, report: ShipReport, deadline: float | None) -> None:
        buffer_id = conn.execute("SELECT value FROM meta WHERE key = 'buffer_id'").fetchone()[0]
        batch_bytes = min(self.batch_bytes, TIGHT_BATCH_BYTES) if self._tight else self.batch_bytes
        # Batches staged before this run may have been uploaded by it, and
        # loaded and archived since: those are looked for before uploading.
        self._recovering = {b.batch_id for b in ledger.batches(conn, "staged")}
        adopted, left = ledger.adopt_legacy(conn, self.layout.staged(), self.fence)
        if adopted:
            log.warning("%d batches uploaded by an earlier version but never loaded are shipped again", adopted)
        if left:
            log.error(
                "%d batches of %s are in load jobs of an earlier version of bqspool: drain them with that "
                "version; their events stay in the buffer until then",
                left,
                self.path,
            )
        for stream, n in rows.streams_pending(conn):
            if stream in self.schemas:
                ledger.seal(conn, stream, buffer_id, self.layout.staged(), self.batch_rows, batch_bytes, self.fence)
            else:
                report.undrainable[stream] = n
                log.error("stream %r has %d pending events but no table in the schema set; not shipping it", stream, n)
        faults.hit("after_seal")
        pending = [b for b in ledger.batches(conn) if b.state in ("sealed", "staged")]
        progress = Progress(sum(b.rows for b in pending), self.progress_enabled)
        # One batch's upload and hand-over run on a second thread while the
        # next batch is staged here: the upload waits on the network and the
        # hand-over on SQLite, neither on this thread's Parquet work. One at a
        # time, so at most two staged files exist; none on a full disk.
        inflight: Future[Delivered] | None = None
        try:
            for b in pending:
                if self.should_stop() or (deadline is not None and time.monotonic() > deadline):
                    break
                self._renew(conn)
                staged = self._stage_batch(conn, b, report)
                if inflight is not None:
                    done, inflight = inflight, None
                    self._collect(done.result(), report, progress)
                if staged is None:
                    continue
                inflight = self._submit(staged)
                if inflight is None:
                    self._collect(self._deliver(*staged), report, progress)
        except BaseException:
            # Joined even when this thread failed: nothing may touch the
            # buffer once the lease is released. This thread's error wins.
            if inflight is not None:
                with contextlib.suppress(Exception):
                    inflight.result()
            raise
        else:
            if inflight is not None:
                done, inflight = inflight, None
                self._collect(done.result(), report, progress)
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

    def _stage_batch(
        self, conn: sqlite3.Connection, b: ledger.Batch, report: ShipReport
    ) -> tuple[ledger.Batch, Path] | None:
        """Stage ``b`` and record it staged; the batch as recorded and its file,
        ready to deliver, or None (handed over already, quarantined, or not
        the ship's any more)."""
        fresh = ledger.batch(conn, b.batch_id)  # as it is now, not as the list we started from says
        if fresh is None or fresh.state not in ("sealed", "staged"):
            return None
        b = fresh
        if b.state == "staged" and b.batch_id in self._recovering:
            if already_handed_over(self.objects, self.layout, b.object_name):
                self._count(Delivered(b, self._hand_over(conn, b, "")), report)
                return None
        try:
            with report.timing("stage"):
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
            return None
        if b.state == "sealed":
            size = path.stat().st_size
            digest = _digest(path) if ledger.unnamed(b) else None
            with self._step:
                name = ledger.mark_staged(conn, b, size, digest, self.fence)
                if name is None:
                    return None
                faults.hit("after_stage")
            b = dataclasses.replace(b, state="staged", object_size=size, object_name=name)
        return b, path

    def _deliver(self, b: ledger.Batch, path: Path) -> Delivered:
        """Upload a staged batch and hand it over: the object is the durable copy,
        the rows leave the buffer. Runs on the upload thread, with its own
        connection to the buffer (the fence holds across connections)."""
        conn = self._delivery_conn()
        timings: dict[str, float] = {}
        t = time.monotonic()
        self._renew(conn)  # still ours before anything leaves the host
        try:
            stored = self.objects.upload(b.object_name, path)
        except ObjectConflictError as exc:
            return Delivered(b, None, conflict=str(exc) if self._hold(conn, b, str(exc)) else None)
        timings["upload"] = time.monotonic() - t
        with self._step:
            faults.hit("after_upload")
        t = time.monotonic()
        events = self._hand_over(conn, b, stored.checksum)
        timings["handover"] = time.monotonic() - t
        path.unlink(missing_ok=True)
        return Delivered(b, events, timings)

    def _hand_over(self, conn: sqlite3.Connection, b: ledger.Batch, checksum: str) -> int | None:
        """Mark ``b`` shipped, its rows gone; the events handed over, or None if
        it was not ``staged`` any more."""
        with self._step:
            events = ledger.mark_shipped(conn, b, checksum, fault=faults.hit, fence=self.fence)
            if events is not None:
                faults.hit("after_ship")
        return events

    def _collect(self, done: Delivered, report: ShipReport, progress: Progress) -> None:
        """Count a delivered batch into the report (on the ship's own thread)."""
        for step, took in done.timings.items():
            report.step_seconds[step] = round(report.step_seconds.get(step, 0.0) + took, 4)
        if done.conflict is not None:
            self._held(done.batch, done.conflict, report)
        self._count(done, report)
        progress.advance(done.batch.rows)

    def _count(self, done: Delivered, report: ShipReport) -> None:
        if done.events is None:
            return
        b = done.batch
        report.events_shipped += done.events
        report.batches_shipped += 1
        report.bytes_shipped += b.object_size or 0
        mine = report.stream(b.stream)
        mine["events"] += done.events
        mine["batches"] += 1

    def _delivery_conn(self) -> sqlite3.Connection:
        if self._conn2 is None:
            self._conn2 = store.connect(self.path, synchronous="FULL")
            self._conn2.execute("PRAGMA secure_delete = FAST")  # see ship_once
        return self._conn2

    def _submit(self, staged: tuple[ledger.Batch, Path]) -> Future[Delivered] | None:
        """Deliver ``staged`` on the upload thread; None where it must be done
        here: on a full disk (one staged file at a time), and at interpreter
        exit (the shipper's last ship), where no new work may be scheduled."""
        if self._tight:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="bqspool-upload")
        try:
            return self._pool.submit(self._deliver, *staged)
        except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
            return None

    def _quarantine(self, conn: sqlite3.Connection, b: ledger.Batch, error: str, report: ShipReport) -> None:
        if self._hold(conn, b, error):
            self._held(b, error, report)

    def _hold(self, conn: sqlite3.Connection, b: ledger.Batch, error: str) -> bool:
        """Quarantine ``b`` in the ledger; whether it was live (either thread)."""
        with self._step:
            return ledger.quarantine(conn, b.batch_id, error, self.fence)

    def _held(self, b: ledger.Batch, error: str, report: ShipReport) -> None:
        report.quarantined.append(b.batch_id)
        report.stream(b.stream)["quarantined"] += b.rows
        log.error("batch %s quarantined: %s", b.batch_id, error, extra=fields(b.stream, batch=b.batch_id))

    def _housekeeping(self, conn: sqlite3.Connection, compact: bool = True) -> None:
        # Give the space of acked rows back: free pages to the filesystem,
        # then checkpoint and truncate the WAL. A short busy timeout keeps
        # appenders from waiting on us; if they are busy, the next drain
        # finishes the job. Then put the disk reserve back if it was used.
        try:
            if compact:
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
