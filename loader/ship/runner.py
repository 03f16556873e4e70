"""The ship stage: one buffer file -> Parquet objects in ``staged/``, each step recorded first.

Ship runs on every host, on its own buffer file. Each step is recorded in
the buffer file (see :mod:`.ledger`) before the next one starts, each is
safe to repeat, and each is fenced by the buffer's lease (see
:mod:`.buffer_lease`):

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
staged (see :mod:`.delivery`). A host never waits for BigQuery: it ships
while BigQuery is down. On a full disk the ship releases the buffer's
reserve file and works in small batches, one at a time, until the
hand-overs have made room (see ``store.RESERVE_BYTES``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from bqspool.buffer import opening, rows, store
from bqspool.schemas import SchemaSet
from bqspool.schemas.errors import DiskFullError, LeaseLostError

from .. import billing, faults
from ..archived import already_handed_over
from ..interfaces import ObjectStore
from ..layout import Layout
from ..logs import fields
from ..process import new_holder, peak_rss_mb
from ..progress import Progress
from ..settings import DEFAULTS, Settings
from . import buffer_lease, ledger
from .delivery import Delivered, Delivery, connect
from .policy import Due, ShipPolicy
from .report import ShipReport
from .stage import Stager, read_batch_payloads, staging_error

log = logging.getLogger("bqspool.loader")
T = TypeVar("T")

TIGHT_BATCH_BYTES = 256 * 1024  # batch size while the disk is full: its Parquet file must fit the reserve
DEADLINE_BATCH_ROWS = 65_536  # events per batch on the way out: a deadline is kept to about a batch's stage


class Ship:
    """Ships one buffer file to the object store; never needs a warehouse."""

    def __init__(
        self,
        buffer_path: str | Path,
        schemas: SchemaSet,
        objects: ObjectStore,
        settings: Settings = DEFAULTS,
        *,
        staging_dir: str | Path | None = None,
        progress: bool = True,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,  # what "due" is measured by, against the buffer's append times
    ):
        self.path = Path(buffer_path)
        self.clock = clock
        self.schemas, self.objects, self.settings = schemas, objects, settings
        self.layout = Layout(settings.prefix)
        self.staging = Path(staging_dir) if staging_dir else self.path.with_name(self.path.name + ".staging")
        self.progress_enabled = progress
        self.should_stop = should_stop
        self.holder = new_holder()
        self.fence: buffer_lease.Fence | None = None
        self._stagers: dict[str, Stager] = {}
        self._delivery: Delivery | None = None  # this ship's uploads and hand-overs
        self._recovering: set[str] = set()  # batches staged before this ship: uploaded already, perhaps
        self._tight = False  # the disk is full: small batches, one at a time
        self._deadline = False  # this ship has a deadline (SIGTERM): small batches
        self.policy = ShipPolicy(settings.target_bytes, settings.max_delay)
        self._only: dict[str, Due] | None = None  # this ship's streams (the due ones), or None: all

    def due(self) -> dict[str, Due]:
        """The streams due to ship now, each with why (see :mod:`.policy`): reads the
        buffer file alone, no request; nothing if it does not exist yet."""
        if not self.path.exists():
            return {}
        conn = sqlite3.connect(self.path, timeout=5.0)
        try:
            return self.policy.due(conn, self.schemas, self.clock())
        except sqlite3.OperationalError as exc:  # an older file, or busy: a whole ship sorts it out
            return {"*": Due("unfinished", f"the buffer could not be read for the check ({exc})")}
        finally:
            conn.close()

    def ship_once(self, deadline: float | None = None, *, due_only: bool = False) -> ShipReport:
        """Ship everything pending now (with ``due_only``, the due streams' only: see
        :meth:`due`), or until ``deadline`` (a ``time.monotonic()`` instant) passes.
        Raises LeaseHeldError if another loader ships this buffer, LeaseLostError
        if this one lost its lease midway, BackendUnavailableError if GCS stays
        down, DiskFullError if the disk stays full."""
        due = self.due() if due_only else None
        if due is not None and not due:
            return ShipReport()  # nothing due: no lease, no request
        before = self.objects.requests.snapshot()
        self._only = None if due is None or "*" in due else due
        try:
            with billing.spending(billing.SHIP):
                report = self._ship_once(deadline)
        finally:
            self._only = None
        report.due = {s: str(why) for s, why in (due or {}).items()}
        report.requests = self.objects.requests.since(before)
        if report.batches_shipped or report.quarantined:
            log.debug("%s", report.line())  # `run` logs each cycle's line at info (see scheduler)
        return report

    def _ship_once(self, deadline: float | None) -> ShipReport:
        started = time.monotonic()
        report = ShipReport()
        self._tight = False
        self._deadline = deadline is not None
        _, in_use = opening.open_file(self.path, check="none")
        conn = connect(self.path)
        try:
            self.fence = self._make_room(conn, lambda: self._take_lease(conn))
            try:
                self._make_room(conn, lambda: self._ship(conn, report, deadline))
            except Exception as exc:
                self._lost_lease_behind(conn, exc)
                raise
            finally:
                if self._delivery is not None:
                    self._delivery.close()
                    self._delivery = None
                buffer_lease.release_lease(conn, self.fence)
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
        return report

    def _make_room(self, conn: sqlite3.Connection, step: Callable[[], T]) -> T:
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

    def _take_lease(self, conn: sqlite3.Connection) -> buffer_lease.Fence:
        ledger.prepare(conn)  # the loader's tables up to this version first
        return buffer_lease.acquire_lease(conn, self.holder, self.settings.lease_seconds, self.path)

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
                buffer_lease.check_fence(conn, self.fence)
        except LeaseLostError as lost:
            raise lost from exc
        except Exception:
            return

    # -- the steps ------------------------------------------------------------------

    def _seal(self, conn: sqlite3.Connection, report: ShipReport) -> None:
        """Seal what is pending of every stream with a table; recover earlier versions' batches."""
        buffer_id = store.meta(conn)["buffer_id"]
        batch_bytes = min(self.settings.batch_bytes, TIGHT_BATCH_BYTES) if self._tight else self.settings.batch_bytes
        adopted, left = ledger.adopt_legacy(conn, self.layout, self.fence)
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
                if self._only is None or stream in self._only:
                    cut = min(batch_bytes, self.policy.stored_target(stream))  # an object of about target_bytes
                    # Due by size: whole objects ship, the rest waits to fill one (or to age).
                    whole = self._only is not None and self._only[stream].kind == "size"
                    ledger.seal(conn, stream, buffer_id, self.layout, self._max_rows(), cut, self.fence, whole)
            else:
                report.undrainable[stream] = n
                log.error("stream %r has %d pending events but no table in the schema set; not shipping it", stream, n)
        faults.hit("after_seal")

    def _max_rows(self) -> int:
        # On the way out (a deadline) batches stay small, so the deadline is kept to a batch's time.
        return min(self.settings.batch_rows, DEADLINE_BATCH_ROWS) if self._deadline else self.settings.batch_rows

    def _ship(self, conn: sqlite3.Connection, report: ShipReport, deadline: float | None) -> None:
        assert self.fence is not None
        # Batches staged before this run may have been uploaded by it, and
        # loaded and archived since: those are looked for before uploading.
        self._recovering = {b.batch_id for b in ledger.batches(conn, "staged")}
        self._seal(conn, report)
        pending = [b for b in ledger.batches(conn) if b.state in ("sealed", "staged")]
        progress = Progress(sum(b.rows for b in pending), self.progress_enabled)
        delivery = self._delivery = Delivery(
            self.path, self.objects, self.fence, self.settings.lease_seconds, self.schemas
        )
        # One batch in flight, so at most two staged files exist; none on a full disk.
        inflight: Future[Delivered] | None = None
        try:
            for b in pending:
                if self.should_stop() or (deadline is not None and time.monotonic() > deadline):
                    break
                delivery.renew(conn)
                staged = self._stage_batch(conn, b, report)
                if inflight is not None:
                    done, inflight = inflight, None
                    self._collect(done.result(), report, progress)
                if staged is None:
                    continue
                inflight = None if self._tight else delivery.submit(*staged)
                if inflight is None:
                    self._collect(delivery.deliver(*staged), report, progress)
        except BaseException:
            # Joined even when this thread failed: nothing may touch the
            # buffer once the lease is released. This thread's error wins.
            if inflight is not None:
                with contextlib.suppress(Exception):
                    inflight.result()
            raise
        else:
            if inflight is not None:
                self._collect(inflight.result(), report, progress)
        finally:
            progress.close()

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
        assert self._delivery is not None
        fresh = ledger.batch(conn, b.batch_id)  # as it is now, not as the list we started from says
        if fresh is None or fresh.state not in ("sealed", "staged"):
            return None
        b = fresh
        if b.state == "staged" and b.batch_id in self._recovering:
            if already_handed_over(self.objects, self.layout, b.object_name):
                self._count(Delivered(b, self._delivery.hand_over(conn, b, "")), report)
                return None
        try:
            with report.timing("stage"):
                path = self._stage_file(conn, b)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(f"no room to stage batch {b.batch_id} in {self.staging}") from exc
            raise
        except Exception as exc:
            if not staging_error(exc):
                raise
            # The parser's message may quote the row: keep it at debug level.
            log.debug("staging batch %s failed: %r", b.batch_id, exc)
            reason = (
                f"cannot be staged ({type(exc).__name__}): a stored row does not fit the "
                f"table {b.stream} (a column removed from the schema set, or a damaged row)"
            )
            if self._delivery.quarantine(conn, b, reason):
                self._report_quarantined(b, reason, report)
            return None
        if b.state == "sealed":
            return self._mark_staged(conn, b, path)
        return b, path

    def _mark_staged(self, conn: sqlite3.Connection, b: ledger.Batch, path: Path) -> tuple[ledger.Batch, Path] | None:
        assert self._delivery is not None
        size = path.stat().st_size
        # A batch sealed by an earlier version is named from its file's digest.
        digest = _file_sha256(path) if ledger.unnamed(b) else None
        with self._delivery.write_lock:
            name = ledger.mark_staged(conn, b, size, digest, self.fence, self.layout)
            if name is None:
                return None
            faults.hit("after_stage")
        return dataclasses.replace(b, state="staged", object_size=size, object_name=name), path

    def _collect(self, done: Delivered, report: ShipReport, progress: Progress) -> None:
        """Count a delivered batch into the report (on the ship's own thread)."""
        for step, took in done.timings.items():
            report.add_time(step, took)
        if done.conflict is not None:
            self._report_quarantined(done.batch, done.conflict, report)
        self._count(done, report)
        progress.advance(done.batch.rows)

    def _count(self, done: Delivered, report: ShipReport) -> None:
        if done.events is not None:
            b = done.batch
            report.shipped(b.stream, done.events, b.object_size or 0)
            self.policy.learn(b.stream, b.nbytes, b.object_size or 0)

    def _report_quarantined(self, b: ledger.Batch, reason: str, report: ShipReport) -> None:
        report.quarantined.append(b.batch_id)
        report.stream(b.stream)["quarantined"] += b.rows
        log.error("batch %s quarantined: %s", b.batch_id, reason, extra=fields(b.stream, batch=b.batch_id))

    def _housekeeping(self, conn: sqlite3.Connection, compact: bool = True) -> None:
        # Give the space of acked rows back: free pages to the filesystem,
        # then checkpoint and truncate the WAL. A short busy timeout keeps
        # appenders from waiting on us; if they are busy, the next ship
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


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
