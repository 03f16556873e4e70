"""The drain lease: one loader per buffer file at a time, fenced by a token.

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
from pathlib import Path

from bqspool.schemas.errors import BufferUnavailableError


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
