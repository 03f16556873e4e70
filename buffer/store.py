"""The buffer file: creation, format version and migrations, integrity check.

Everything that touches the SQLite file's layout lives here; the writer and
the loader go through these helpers so the table shapes have one home.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Iterator

from bqspool.schemas.errors import (
    BufferBusyError,
    BufferFormatError,
    BufferUnavailableError,
    ConfigError,
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
    # The loader's fencing token: it grows each time the drain lease is
    # taken, and every state change checks it (loader/lease.py).
    "ALTER TABLE lease ADD COLUMN token INTEGER NOT NULL DEFAULT 0",
    # Parts of a batch a load job rejected, bisected to find the bad rows
    # (loader/bisect.py), and the state a quarantined batch was held in.
    "ALTER TABLE batches ADD COLUMN parent TEXT",
    "ALTER TABLE batches ADD COLUMN part_lo INTEGER",
    "ALTER TABLE batches ADD COLUMN part_hi INTEGER",
    "ALTER TABLE batches ADD COLUMN held_from TEXT",
    "CREATE INDEX batches_parent ON batches (parent) WHERE parent IS NOT NULL",
]

# What the size cap counts: pending events' bytes plus dead letters'.
USED_BYTES = "SELECT coalesce(sum(value), 0) FROM counters WHERE name IN ('pending_bytes', 'dead_bytes')"

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


def _open_private(path: Path, flags: int) -> int:
    """``os.open`` with mode 0600 that never follows a symlink at ``path``.

    A symlink where the buffer or its lock file goes would make us create
    or write a file somewhere else (a dangling link is followed on create).
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"{path} is a symlink; bqspool refuses to create or open its files "
                              "through one: give the real path") from None
        raise _unavailable(path, exc) from exc


def _unavailable(path: Path, exc: BaseException) -> BufferUnavailableError:
    try:
        full = os.statvfs(path.parent).f_bavail == 0
    except OSError:
        full = False
    why = ("the disk is full: free space (or let the loader drain once there is a little)" if full else
           "this is usually temporary (too many open files, permissions, a read-only or missing disk)")
    return BufferUnavailableError(f"cannot open buffer file {path}: {exc}. The file was left as it is; {why}")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock beside the file, held while opening.

    Several worker processes open the same buffer at start-up; only one at a
    time may check, migrate or move aside a corrupt file.
    """
    fd = _open_private(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _in_use_lock(path: Path) -> int:
    """The descriptor of the ``.inuse`` file, on which every process that has
    the buffer open holds a shared lock for as long as it does."""
    return _open_private(path.with_name(path.name + ".inuse"), os.O_RDWR | os.O_CREAT)


def release(handle: int | None) -> None:
    """Let go of the in-use lock :func:`open_file` returned."""
    if handle is not None:
        with contextlib.suppress(OSError):
            os.close(handle)


# A file of this size beside the buffer, which the writer never uses: on a
# full disk the loader deletes it to find room, and puts it back once its
# acks freed space. The first thing that room is for is a checkpoint: the
# disk fills when one needs to grow the database file by the WAL's new
# pages, so the WAL is checkpointed every RESERVE_BYTES (WAL_PAGES pages,
# instead of SQLite's 1,000) and the reserve always covers one. After it
# come the lease, seal and ack writes and one small staged file.
RESERVE_BYTES = 2 * 1024 * 1024
WAL_PAGES = RESERVE_BYTES // 4096


def _reserve_path(path: Path) -> Path:
    return path.with_name(path.name + ".reserve")


def ensure_reserve(path: Path) -> bool:
    """Create the reserve file if it is missing and there is room; whether it exists now."""
    reserve = _reserve_path(path)
    if reserve.exists():
        return True
    tmp = reserve.with_name(reserve.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
        os.replace(tmp, reserve)
        return True
    except OSError as exc:
        log.debug("no reserve file for %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False


def release_reserve(path: Path) -> bool:
    """Delete the reserve file to make room on a full disk; whether there was one."""
    try:
        _reserve_path(path).unlink()
        return True
    except OSError:
        return False


def _create_private(path: Path) -> None:
    # SQLite gives -wal and -shm the main file's mode, so 0600 here covers all three.
    os.close(_open_private(path, os.O_RDWR | os.O_CREAT))


def _move_aside(path: Path, reason: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}-{os.getpid()}")
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    log.error(
        "buffer file %s is corrupt (%s); moved it aside to %s and started a fresh buffer. "
        "Events in the old file are NOT lost: inspect or salvage them with the sqlite3 shell.",
        path,
        reason,
        target,
    )
    return target


def _is_corruption(exc: sqlite3.Error) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB: the file's content is bad. Anything
    else (CANTOPEN, IOERR, READONLY, PERM, a lock, ...) is the host's."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "malformed" in str(exc) or "not a database" in str(exc)
    return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _integrity_problem(conn: sqlite3.Connection, check: str) -> str | None:
    if check == "none":
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return None
    rows = conn.execute("PRAGMA quick_check" if check == "quick" else "PRAGMA integrity_check").fetchall()
    result = "; ".join(r[0] for r in rows[:5])
    return None if result == "ok" else result


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    with transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > FORMAT_VERSION:
            raise BufferFormatError(
                f"{path} has buffer format {version}, this bqspool knows up to {FORMAT_VERSION}: upgrade bqspool"
            )
        if version == 0:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if names - _OUR_TABLES:
                raise BufferFormatError(f"{path} is an SQLite file of something else (tables: {sorted(names)})")
        for step in range(version + 1, FORMAT_VERSION + 1):
            for sql in MIGRATIONS[step]:
                conn.execute(sql)
            if step == 1:
                conn.execute("INSERT INTO meta VALUES ('buffer_id', ?), ('created_us', ?)", (uuid.uuid4().hex, str(now_us())))
            conn.execute(f"PRAGMA user_version = {step}")
            log.info("buffer %s migrated to format %d", path, step)


def _check(path: Path, check: str) -> str | None:
    """Open, set up and check the file: its corruption as text, or None when healthy.

    Raises BufferUnavailableError for every failure that is not corruption.
    """
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    except sqlite3.Error as exc:
        raise _unavailable(path, exc) from exc
    try:
        try:
            if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                # Only possible before the first table: lets the loader
                # hand free pages back after it deletes loaded rows.
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            problem = _integrity_problem(conn, check)
        except sqlite3.DatabaseError as exc:
            if is_disk_full(exc) or is_busy(exc):
                raise _translate(exc) from exc
            if not _is_corruption(exc):
                raise _unavailable(path, exc) from exc
            problem = str(exc)
        if problem is None:
            try:
                _migrate(conn, path)
            except sqlite3.Error as exc:
                raise _unavailable(path, exc) from exc
        return problem
    finally:
        conn.close()


def open_file(path: Path, *, check: str = "quick") -> tuple[Path | None, int]:
    """Create, check and migrate the buffer file.

    Returns where a corrupt file was moved (or None) and the in-use lock
    handle, which the caller holds for as long as it uses the file and
    gives back with :func:`release`.

    ``check`` is ``"quick"`` (PRAGMA quick_check, the default), ``"full"``
    (integrity_check) or ``"none"``. A file that is really corrupt
    (SQLITE_CORRUPT, SQLITE_NOTADB, a failed check) is moved aside with a
    loud error, the move recorded in the fresh file for ``status`` and
    ``stats()`` in every process, and a fresh buffer starts: an app must
    never crash-loop on a damaged spool. It is never moved while another
    process has it open (BufferFormatError then). Any other failure (too
    many open files, permissions, a read-only directory, I/O errors) raises
    :class:`BufferUnavailableError` and leaves the file alone.
    """
    if path.is_symlink():
        raise ConfigError(f"{path} is a symlink; bqspool refuses to create or open its files "
                          "through one: give the real path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unavailable(path, exc) from exc
    moved: Path | None = None
    problem_text = ""
    with file_lock(path):
        in_use = _in_use_lock(path)
        try:
            for attempt in range(2):
                if not path.exists():
                    _create_private(path)
                problem = _check(path, check)
                if problem is None:
                    if moved is not None:
                        _record_move(path, moved, problem_text)
                    fcntl.flock(in_use, fcntl.LOCK_SH)
                    ensure_reserve(path)
                    return moved, in_use
                if attempt:
                    raise BufferFormatError(f"{path}: a fresh buffer file failed its check: {problem}")
                try:
                    fcntl.flock(in_use, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise BufferFormatError(
                        f"buffer file {path} is corrupt ({problem}) and another process still has it open; "
                        "stop the processes using it, then open it again (it will be moved aside)") from None
                moved, problem_text = _move_aside(path, problem), problem
                fcntl.flock(in_use, fcntl.LOCK_UN)
        except BaseException:
            release(in_use)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _record_move(path: Path, moved: Path, problem: str) -> None:
    """Note the move in the fresh file, where every process's status sees it."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    try:
        with transaction(conn):
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('moved_aside', ?)",
                         (json.dumps({"path": str(moved), "reason": problem[:500], "at_us": now_us()}),))
    finally:
        conn.close()


def moved_aside(conn: sqlite3.Connection) -> dict | None:
    """Where a corrupt file was moved when this one was started fresh (path, reason, at_us), or None."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'moved_aside'").fetchone()
    return json.loads(row[0]) if row else None
