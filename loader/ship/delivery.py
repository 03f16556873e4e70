"""Delivering a staged batch: upload its file, then hand it over (its rows leave the buffer).

One :class:`Delivery` serves one ship. Its upload thread, with its own
connection to the buffer, delivers batch N while the ship's thread stages
batch N+1: the upload waits on the network and the hand-over on SQLite,
neither on the ship's Parquet work. Both threads take :attr:`Delivery.write_lock`
for each write to the buffer and at each fault point, so they never wait
on each other inside SQLite (its busy handler sleeps), and a process
stopped or killed at a fault point is between the steps of both threads,
holding no write lock. Every write is fenced by the ship's lease.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bqspool.buffer import store
from bqspool.schemas import SchemaSet
from bqspool.schemas.errors import ObjectConflictError

from .. import billing, faults, partitions
from ..interfaces import ObjectStore, StoredObject
from . import buffer_lease, ledger


@dataclass
class Delivered:
    """What delivering one staged batch did."""

    batch: ledger.Batch
    events: int | None  # handed over; None if it was not the ship's any more
    timings: dict[str, float] = field(default_factory=dict)  # "upload", "handover"
    conflict: str | None = None  # quarantined: its name holds other bytes


def connect(path: Path) -> sqlite3.Connection:
    """A loader's connection to the buffer file."""
    conn = store.connect(path, synchronous="FULL")
    # Some SQLite builds default to secure_delete=ON, which zeroes every
    # page a hand-over frees and so writes (and fsyncs) the data a second
    # time. FAST zeroes what costs no extra I/O; the freed pages go back
    # to the filesystem in the ship's housekeeping right after.
    conn.execute("PRAGMA secure_delete = FAST")
    return conn


class Delivery:
    """One ship's uploads and hand-overs, on its upload thread or on the caller's."""

    def __init__(
        self,
        path: Path,
        objects: ObjectStore,
        fence: buffer_lease.Fence,
        lease_seconds: float,
        schemas: SchemaSet | None = None,
    ):
        self.path, self.objects, self.fence, self.lease_seconds = path, objects, fence, lease_seconds
        self.schemas = schemas  # for the partitions each object's metadata names
        self.write_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._delivery_conn: sqlite3.Connection | None = None

    def renew(self, conn: sqlite3.Connection) -> None:
        """Check that the ship still holds its lease, and extend it (LeaseLostError if not)."""
        with self.write_lock:
            buffer_lease.renew_lease(conn, self.fence, self.lease_seconds)

    def quarantine(self, conn: sqlite3.Connection, b: ledger.Batch, reason: str) -> bool:
        """Quarantine ``b`` in the ledger; whether it was live (from either thread)."""
        with self.write_lock:
            return ledger.quarantine(conn, b.batch_id, reason, self.fence)

    def hand_over(self, conn: sqlite3.Connection, b: ledger.Batch, checksum: str) -> int | None:
        """Mark ``b`` shipped, its rows gone; the events handed over, or None if
        it was not ``staged`` any more."""
        with self.write_lock:
            events = ledger.mark_shipped(conn, b, checksum, fault=faults.hit, fence=self.fence)
            if events is not None:
                faults.hit("after_ship")
        return events

    def deliver(self, b: ledger.Batch, path: Path) -> Delivered:
        """Upload a staged batch and hand it over: the object is the durable copy,
        the rows leave the buffer. On the upload thread, with its own connection
        to the buffer (the fence holds across connections)."""
        if self._delivery_conn is None:
            self._delivery_conn = connect(self.path)
        conn = self._delivery_conn
        timings: dict[str, float] = {}
        t = time.monotonic()
        self.renew(conn)  # still ours before anything leaves the host
        try:
            with billing.spending(billing.SHIP):
                stored = self._upload(b, path)
        except ObjectConflictError as exc:
            return Delivered(b, None, conflict=str(exc) if self.quarantine(conn, b, str(exc)) else None)
        timings["upload"] = time.monotonic() - t
        with self.write_lock:
            faults.hit("after_upload")
        t = time.monotonic()
        events = self.hand_over(conn, b, stored.checksum)
        timings["handover"] = time.monotonic() - t
        path.unlink(missing_ok=True)
        return Delivered(b, events, timings)

    def _upload(self, b: ledger.Batch, path: Path) -> StoredObject:
        """Upload ``b``'s file with, in its metadata, what the ship spent on it: its
        insert and every request since the last object's (the commit log keeps it,
        so ``bqspool cost`` reads what each ship cost without a request of its own),
        and the partitions its rows fall in (the commit groups by them)."""
        metadata = {}
        if self.schemas is not None and b.stream in self.schemas:
            table = self.schemas[b.stream]
            if table.partitioning is not None:
                metadata[partitions.KEY] = partitions.of_file(path, table.partitioning).encode()
        counts = self.objects.requests
        spent = billing.add_ops(counts.take(billing.SHIP), {"insert": 1})
        counts.prepay(billing.SHIP, {"insert": 1})
        try:
            return self.objects.upload(b.object_name, path, {**metadata, billing.OPS_KEY: billing.encode_ops(spent)})
        except BaseException:
            counts.give_back(billing.SHIP, spent)  # recorded in the next object instead
            raise

    def submit(self, b: ledger.Batch, path: Path) -> Future[Delivered] | None:
        """Deliver on the upload thread; None where the caller must deliver it
        itself: at interpreter exit (the shipper's last ship), where no new
        work may be scheduled."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="bqspool-upload")
        try:
            return self._pool.submit(self.deliver, b, path)
        except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
            return None

    def close(self) -> None:
        """Wait for the upload thread, then close its connection."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._delivery_conn is not None:
            self._delivery_conn.close()
            self._delivery_conn = None
