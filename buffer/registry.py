"""Every open :class:`~.core.Buffer` of this process: closed at interpreter exit, reset in a forked child."""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from typing import Protocol

log = logging.getLogger("bqspool.buffer")


class _Open(Protocol):
    @property
    def path(self) -> object: ...

    def close(self) -> None: ...
    def _reset_after_fork(self) -> None: ...


_open: weakref.WeakSet[_Open] = weakref.WeakSet()


def add(buf: _Open) -> None:
    _open.add(buf)


def discard(buf: _Open) -> None:
    _open.discard(buf)


def _after_fork_in_child() -> None:
    # The parent's writer thread does not exist in the child: each buffer starts over.
    for buf in list(_open):
        buf._reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_all() -> None:
    # wait=False appends still queued at interpreter exit get their commit.
    for buf in list(_open):
        try:
            buf.close()
        except Exception:  # pragma: no cover - best effort at exit
            log.exception("closing buffer %s at exit failed", buf.path)
