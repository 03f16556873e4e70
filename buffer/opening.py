"""Opening the buffer file: locks, checks, migration, moving a corrupt file aside, the disk reserve.

Everything here runs before a process uses the file. Only real corruption
moves a file aside, never while another process holds it; every other
failure to open is a retryable BufferUnavailableError that leaves the file
alone. Symlinks where bqspool creates files are refused.
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
from collections.abc import Iterator
from pathlib import Path

from bqspool.schemas.errors import BufferFormatError, BufferUnavailableError, ConfigError

from .store import (
    _OUR_TABLES,
    FORMAT_VERSION,
    MIGRATIONS,
    RESERVE_BYTES,
    _translate,
    is_busy,
    is_disk_full,
    now_us,
    transaction,
)

log = logging.getLogger("bqspool.buffer")


def _open_private(path: Path, flags: int) -> int:
    """``os.open`` with mode 0600 that never follows a symlink at ``path``.

    A symlink where the buffer or its lock file goes would make us create
    or write a file somewhere else (a dangling link is followed on create).
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                f"{path} is a symlink; bqspool refuses to create or open its files through one: give the real path"
            ) from None
        raise _unavailable(path, exc) from exc


def _unavailable(path: Path, exc: BaseException) -> BufferUnavailableError:
    try:
        full = os.statvfs(path.parent).f_bavail == 0
    except OSError:
        full = False
    why = (
        "the disk is full: free space (or let the loader drain once there is a little)"
        if full
        else "this is usually temporary (too many open files, permissions, a read-only or missing disk)"
    )
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
                conn.execute(
                    "INSERT INTO meta VALUES ('buffer_id', ?), ('created_us', ?)", (uuid.uuid4().hex, str(now_us()))
                )
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
        raise ConfigError(
            f"{path} is a symlink; bqspool refuses to create or open its files through one: give the real path"
        )
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
                    _check_identity(path)
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
                        "stop the processes using it, then open it again (it will be moved aside)"
                    ) from None
                moved, problem_text = _move_aside(path, problem), problem
                fcntl.flock(in_use, fcntl.LOCK_UN)
        except BaseException:
            release(in_use)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _check_identity(path: Path) -> None:
    """Notice a copied file: the inode it was created with is recorded in it, and
    checked on every open. A copy (``cp``, a backup restored, ``VACUUM INTO``)
    has another: its pending events may also be shipped by the original, so
    the copy is recorded (``copied``: when, and the highest seq then), and the
    loader holds those events back for an operator (see ``loader/ship/ledger.py``).
    A file reopened on another host, same volume (a rescheduled pod), is the
    same file: same inode. Runs under the opening lock."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    try:
        inode = str(os.stat(path).st_ino)
        row = conn.execute("SELECT value FROM meta WHERE key = 'inode'").fetchone()
        if row is not None and row[0] == inode:
            return
        with transaction(conn):
            if row is not None:
                top = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
                copied = {"at_us": now_us(), "from_inode": row[0], "inode": inode, "seq": top}
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('copied', ?)", (json.dumps(copied),))
                log.error(
                    "buffer file %s is a copy of another (inode %s, created as %s): its pending events up to "
                    "seq %s, from before the copy, are held back from shipping until an operator decides "
                    "(`bqspool quarantine list`)",
                    path,
                    inode,
                    row[0],
                    top,
                )
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('inode', ?)", (inode,))
    finally:
        conn.close()


def _record_move(path: Path, moved: Path, problem: str) -> None:
    """Note the move in the fresh file, where every process's status sees it."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    try:
        with transaction(conn):
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('moved_aside', ?)",
                (json.dumps({"path": str(moved), "reason": problem[:500], "at_us": now_us()}),),
            )
    finally:
        conn.close()
