"""The buffer's lease: one shipper per buffer file at a time, fenced by a token.

The lease is a row in the buffer file (:mod:`.ledger`): holder, expiry and a
*token* that grows by one every time the lease is taken. A loader takes it
once, renews it as it goes, and every state change it makes is conditional
on its token (``ledger`` functions take a :class:`~.ledger.Fence`). A loader
that was paused past its lease (a VM pause, a slow upload, SIGSTOP) and
resumes after another took over can change nothing: its first step finds
another token and raises :class:`LeaseLostError`, and it stops.

Liveness is the lease's expiry. So that a loader killed with kill -9 does
not hold up the next one for the whole lease, the holder of token T also
holds an exclusive ``flock`` on ``NAME.lease-T`` beside the buffer for as
long as it holds the lease: the kernel drops that lock the instant the
process dies, whatever PID namespace it ran in (two containers in one pod
share a hostname but cannot see each other's pids). A lease whose lock file
anyone else can lock has no live holder and may be taken at once. A holder
that is alive but stalled keeps its lock, so it is waited out until its
lease expires.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from bqspool.buffer.store import now_us, transaction
from bqspool.schemas.errors import BufferUnavailableError, LeaseHeldError, LeaseLostError


def lock_path(buffer: Path, token: int) -> Path:
    return buffer.with_name(f"{buffer.name}.lease-{token}")


def hold(buffer: Path, token: int) -> int:
    """Create and lock the lock file of ``token``; returns its descriptor."""
    path = lock_path(buffer, token)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise BufferUnavailableError(f"cannot create the lease lock {path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def holder_alive(buffer: Path, token: int) -> bool:
    """Whether a live process holds the lock of ``token``. Never blocks."""
    path = lock_path(buffer, token)
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: treat as alive, and wait for the expiry
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def let_go(buffer: Path, token: int, fd: int | None) -> None:
    """Remove the lock file of ``token`` and drop its lock (``fd`` may be None for a dead holder's)."""
    with contextlib.suppress(OSError):
        lock_path(buffer, token).unlink()
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


# -- the lease row ---------------------------------------------------------------


@dataclass(frozen=True)
class Fence:
    """Who holds the buffer's lease, and under which token (see the module)."""

    holder: str
    token: int
    buffer: Path
    fd: int | None = None  # the lock of this token's lock file, while held


def acquire_lease(conn: sqlite3.Connection, holder: str, ttl_s: float, buffer: Path) -> Fence:
    """Take the drain lease under a new token.

    LeaseHeldError if a live loader holds it: one whose lease has not
    expired and whose lock file is still locked.
    """
    now = now_us()
    fd = token = None
    try:
        with transaction(conn):
            row = conn.execute("SELECT holder, expires_us, token FROM lease WHERE name = 'drain'").fetchone()
            old_token = row[2] if row else 0
            if row and row[0] and row[1] > now and holder_alive(buffer, old_token):
                raise LeaseHeldError(
                    f"another loader ({row[0]}) is draining this buffer; its lease expires in "
                    f"{(row[1] - now) / 1e6:.0f}s"
                )
            token = old_token + 1
            fd = hold(buffer, token)  # locked before the row says so: never a row without a live lock
            conn.execute(
                "INSERT INTO lease (name, holder, expires_us, token) VALUES ('drain', ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, expires_us = excluded.expires_us, "
                "token = excluded.token",
                (holder, now + int(ttl_s * 1e6), token),
            )
    except BaseException:
        if fd is not None and token is not None:  # the row was not committed: neither is the lock
            let_go(buffer, token, fd)
        raise
    assert token is not None
    if row and row[0]:
        let_go(buffer, old_token, None)  # the dead or expired holder's lock file
    return Fence(holder, token, buffer, fd)


def check_fence(conn: sqlite3.Connection, fence: Fence | None) -> None:
    """Inside a transaction: raise LeaseLostError unless ``fence`` still holds the lease."""
    if fence is None:
        return
    row = conn.execute("SELECT holder, token FROM lease WHERE name = 'drain'").fetchone()
    if row is None or row[0] != fence.holder or row[1] != fence.token:
        taken = f"; it is now held by {row[0]} (token {row[1]})" if row and row[0] else ""
        raise LeaseLostError(
            f"this loader ({fence.holder}, token {fence.token}) lost its drain lease{taken}. "
            "It stopped before changing anything; nothing was lost, run the drain again"
        )


def renew_lease(conn: sqlite3.Connection, fence: Fence, ttl_s: float) -> None:
    """Extend our lease; LeaseLostError if it changed hands meanwhile (never re-taken silently)."""
    with transaction(conn):
        check_fence(conn, fence)
        conn.execute("UPDATE lease SET expires_us = ? WHERE name = 'drain'", (now_us() + int(ttl_s * 1e6),))


def release_lease(conn: sqlite3.Connection, fence: Fence) -> None:
    """Give the lease up if we still hold it; the token stays, so the next one is new."""
    try:
        with transaction(conn):
            conn.execute(
                "UPDATE lease SET holder = '', expires_us = 0 WHERE name = 'drain' AND holder = ? AND token = ?",
                (fence.holder, fence.token),
            )
    finally:
        let_go(fence.buffer, fence.token, fence.fd)
