"""The buffer file: creation, format version and migrations, integrity check.

Everything that touches the SQLite file's layout lives here; the writer and
the loader go through these helpers so the table shapes have one home.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from bqspool.schemas.errors import (
    BufferBusyError,
    DiskFullError,
)

log = logging.getLogger("bqspool.buffer")

FORMAT_VERSION = 4

# MIGRATIONS[v] takes a file from version v-1 to v. Never edit a shipped
# step: add the next one.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # One row per pending event. seq orders a stream's rows; the loader
        # seals contiguous seq ranges of one stream into batches.
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            stream TEXT NOT NULL,
            event_id TEXT NOT NULL,
            payload TEXT NOT NULL,
            nbytes INTEGER NOT NULL,
            created_us INTEGER NOT NULL)""",
        "CREATE INDEX events_stream_seq ON events (stream, seq)",
        """CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            stream TEXT,
            event_id TEXT,
            payload TEXT NOT NULL,
            reason TEXT NOT NULL,
            created_us INTEGER NOT NULL)""",
        # pending_bytes: sum of events.nbytes, kept in step by every writer
        # and by the loader's ack, so the size cap costs no scan.
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT INTO counters VALUES ('pending_bytes', 0), ('dropped', 0), ('lost', 0)",
    ],
}

MIGRATIONS[2] = [
    # The loader's durable state. A batch is a contiguous seq range of one
    # stream, sealed once and never changed; its id is derived from the
    # buffer id, the stream and the range. A load groups uploaded batches of
    # one stream under a deterministic job id.
    """CREATE TABLE batches (
        batch_id TEXT PRIMARY KEY,
        stream TEXT NOT NULL,
        seq_lo INTEGER NOT NULL,
        seq_hi INTEGER NOT NULL,
        rows INTEGER NOT NULL,
        nbytes INTEGER NOT NULL,
        day TEXT NOT NULL,
        state TEXT NOT NULL,
        object_name TEXT NOT NULL,
        object_size INTEGER,
        object_crc32c TEXT,
        load_id TEXT,
        solo INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        created_us INTEGER NOT NULL,
        updated_us INTEGER NOT NULL)""",
    "CREATE INDEX batches_state ON batches (state, stream)",
    """CREATE TABLE loads (
        load_id TEXT PRIMARY KEY,
        stream TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        job_id TEXT NOT NULL,
        state TEXT NOT NULL,
        error TEXT,
        created_us INTEGER NOT NULL,
        updated_us INTEGER NOT NULL)""",
    # Every load job submitted, failed ones included: the quota counts them.
    "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, stream TEXT NOT NULL, submitted_us INTEGER NOT NULL)",
    "CREATE INDEX jobs_stream_time ON jobs (stream, submitted_us)",
    "CREATE TABLE lease (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_us INTEGER NOT NULL)",
]

MIGRATIONS[3] = [
    # An events row holds one or more events of one stream: ``payload`` is
    # their stored JSON lines joined by "\n" and ``n`` how many. append_many
    # stores a call's events as few large rows, because what a row costs
    # (its b-tree and index entries, written at append and again at the
    # loader's delete) is most of what storing a small event costs. The
    # event id is in each payload line (``_event_id``), so its column goes.
    """CREATE TABLE events_v3 (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        stream TEXT NOT NULL,
        payload TEXT NOT NULL,
        n INTEGER NOT NULL,
        nbytes INTEGER NOT NULL,
        created_us INTEGER NOT NULL)""",
    "INSERT INTO events_v3 (seq, stream, payload, n, nbytes, created_us) "
    "SELECT seq, stream, payload, 1, nbytes, created_us FROM events",
    # Keep the seq counter even if every row was loaded: new rows must land
    # above every range the loader has sealed.
    "DELETE FROM sqlite_sequence WHERE name = 'events_v3'",
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'events_v3', seq FROM sqlite_sequence WHERE name = 'events'",
    "DROP TABLE events",
    "ALTER TABLE events_v3 RENAME TO events",
    "CREATE INDEX events_stream_seq ON events (stream, seq)",
]

MIGRATIONS[4] = [
    # Dead letters count against the size cap (their payload and reason, in
    # characters): a flood of bad input must not grow the file past it.
    "INSERT INTO counters (name, value) SELECT 'dead_bytes', "
    "coalesce(sum(length(payload) + length(reason)), 0) FROM dead_letters",
]
# The loader's tables (batches, loads, jobs, lease) came with format 2,
# before the ledger owned them; every change to them since is the ledger's
# own (bqspool.loader.ledger.prepare), so the writer never touches them.

# A file of this size beside the buffer, which the writer never uses: on a
# full disk the loader deletes it to find room, and puts it back once its
# acks freed space. The first thing that room is for is a checkpoint: the
# disk fills when one needs to grow the database file by the WAL's new
# pages, so the WAL is checkpointed every RESERVE_BYTES (WAL_PAGES pages,
# instead of SQLite's 1,000) and the reserve always covers one. After it
# come the lease, seal and ack writes and one small staged file.
RESERVE_BYTES = 2 * 1024 * 1024
WAL_PAGES = RESERVE_BYTES // 4096


_OUR_TABLES = {"meta", "events", "dead_letters", "counters", "sqlite_sequence", "batches", "loads", "jobs", "lease"}


def now_us() -> int:
    return time.time_ns() // 1000


def is_disk_full(exc: BaseException) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)


def is_busy(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "database is locked" in str(exc)


def connect(path: Path, *, synchronous: str = "FULL", busy_timeout_ms: int = 30_000) -> sqlite3.Connection:
    """An autocommit connection with the buffer's pragmas; callers run BEGIN themselves."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_PAGES}")
    return conn


def release_free_pages(conn: sqlite3.Connection, step_pages: int = 2048) -> int:
    """Hand the file's free pages back to the filesystem; returns how many went.

    A file left with at most ``step_pages`` live pages is rebuilt instead
    (see ``_rebuild``): the usual case after a ship empties the buffer.
    Runs ``PRAGMA incremental_vacuum`` in transactions of ``step_pages``
    pages (autocommit ``conn``; a no-op on a file without incremental
    auto-vacuum). Steps keep the write lock short for appenders, and they
    keep the work proportional to what stays in the file: each page taken
    off the end is marked dirty, and a single transaction over a large free
    list overflows the page cache, which spills those doomed pages into the
    WAL (a drain of 300k events wrote 94 MB that way). A step fits in the
    cache, so its commit drops them and writes only the free-list and
    pointer-map pages.
    """
    before = conn.execute("PRAGMA freelist_count").fetchone()[0]
    if before and conn.execute("PRAGMA page_count").fetchone()[0] - before <= step_pages and _rebuild(conn):
        return before - conn.execute("PRAGMA freelist_count").fetchone()[0]
    left = before
    cache = conn.execute("PRAGMA cache_size").fetchone()[0]
    conn.execute(f"PRAGMA cache_size = {2 * step_pages}")
    try:
        while left:
            # executescript steps the pragma to completion; execute() would
            # free a single page (it stops at the first step without a row).
            conn.executescript(f"PRAGMA incremental_vacuum({step_pages});")
            now = conn.execute("PRAGMA freelist_count").fetchone()[0]
            if now >= left:  # auto-vacuum is off for this file: nothing to hand back
                break
            left = now
    finally:
        conn.execute(f"PRAGMA cache_size = {cache}")
    return before - left


def _rebuild(conn: sqlite3.Connection) -> bool:
    """VACUUM a file that holds little but free pages; whether it ran.

    After a ship that emptied the buffer, walking a free list of 15,600
    pages takes about 40 ms; rebuilding the few live pages takes 1 ms, and
    holds the write lock no longer than one step of the walk would. The copy
    is built in memory (it is at most a step's pages). VACUUM keeps the
    file's auto-vacuum mode, its WAL mode and every INTEGER PRIMARY KEY (so
    ``seq``). Where it cannot run (a statement in progress on ``conn``, no
    memory) the caller walks the free list instead.
    """
    temp = conn.execute("PRAGMA temp_store").fetchone()[0]
    try:
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("VACUUM")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.execute(f"PRAGMA temp_store = {int(temp)}")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, *, busy_timeout_s: float = 30.0) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error.

    SQLite's busy handler already waits; this adds an outer retry so a
    writer never sees ``database is locked`` before ``busy_timeout_s``, and
    translates SQLITE_BUSY/SQLITE_FULL into our exception tree.
    """
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise _translate(exc) from exc
            time.sleep(0.005)
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise _translate(exc) from exc
        raise


def _translate(exc: sqlite3.Error) -> Exception:
    if is_disk_full(exc):
        return DiskFullError(f"buffer disk is full ({exc}); the transaction was rolled back, free space and retry")
    if is_busy(exc):
        return BufferBusyError(f"buffer file stayed locked by another writer: {exc}")
    return exc


def meta(conn: sqlite3.Connection) -> dict[str, str]:
    """The file's ``meta`` table: buffer_id, created_us, moved_aside."""
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def moved_aside(conn: sqlite3.Connection) -> dict | None:
    """Where a corrupt file was moved when this one was started fresh (path, reason, at_us), or None."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'moved_aside'").fetchone()
    return json.loads(row[0]) if row else None
