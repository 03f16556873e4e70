"""Admitting rows into the next commit group, under the size cap's policy.

A mixin of :class:`~.core.Buffer`, which provides the writer, the counters
and the policy settings. Dead letters count against the cap like events.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from bqspool.schemas.errors import BufferClosedError, BufferFullError

from .payload import RateLimitedLog
from .rows import dead_row_bytes
from .writer import Group, Writer

log = logging.getLogger("bqspool.buffer")


class AdmissionMixin:
    path: Path
    max_bytes: int | None
    on_full: str
    block_timeout: float
    _closed: bool
    _pid: int
    _disk_bytes: int
    _inflight: int
    _counts: dict[str, int]
    _drop_log: RateLimitedLog

    def _ensure_writer(self) -> Writer:  # provided by Buffer
        raise NotImplementedError

    def _reset_after_fork(self) -> None:  # provided by Buffer
        raise NotImplementedError

    def _read_used_bytes(self) -> int:  # provided by Buffer
        raise NotImplementedError

    def _room(self, nbytes: int) -> bool:
        return self.max_bytes is None or self._disk_bytes + self._inflight + nbytes <= self.max_bytes

    def _make_room(self, writer: Writer, nbytes: int, may_block: bool = True) -> None:
        """Policies "raise" and "block" for ``nbytes`` more, with ``writer.cond`` held.

        ``may_block=False`` (an event loop's thread) turns "block" into "raise":
        asyncio callers wait for room themselves, with ``asyncio.sleep``.
        """
        cap = self.max_bytes
        assert cap is not None
        if nbytes > cap:
            raise BufferFullError(f"{nbytes} bytes in one call can never fit the {cap}-byte cap of {self.path}")
        if self.on_full == "raise" or not may_block:
            raise BufferFullError(f"buffer {self.path} holds {self._disk_bytes + self._inflight} of {cap} bytes")
        deadline = time.monotonic() + self.block_timeout
        while not self._room(nbytes):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BufferFullError(
                    f"buffer {self.path} stayed full ({cap} bytes cap) for {self.block_timeout}s; "
                    "is the loader running?"
                )
            # Room is made by the loader, usually another process: poll the
            # committed size rather than wait for a signal that never comes.
            writer.cond.wait(min(remaining, 0.1))
            writer.cond.release()
            try:
                disk = self._read_used_bytes()
            finally:
                writer.cond.acquire()
            self._disk_bytes = disk

    def _drop(self, writer: Writer, n: int) -> None:
        self._counts["dropped"] += n
        writer.group.drops += n  # persisted with the next commit, for `bqspool status`
        self._drop_log("buffer full (%d-byte cap): dropped the newest %d event(s)", self.max_bytes, n)

    def _enqueue(
        self, rows: list[tuple], dead: list[tuple], *, wait: bool, future=None, may_block: bool = True
    ) -> tuple[Group, list[bool]]:
        """Queue rows and dead-letter rows for the next commit.

        Returns the group and which of ``rows + dead`` were admitted (all,
        unless ``on_full="drop"`` dropped some). Dead letters count against
        the size cap like events: a flood of bad input must not fill the
        disk behind the cap's back.
        """
        if self._closed:
            raise BufferClosedError(f"buffer {self.path} is closed")
        if self._pid != os.getpid():  # forked without the at-fork hook running
            self._reset_after_fork()
        writer = self._ensure_writer()
        # The common call is one valid event: keep its path free of the
        # dead-letter bookkeeping (wait=False appends are timed in µs).
        dead_sizes = [dead_row_bytes(d) for d in dead] if dead else ()
        with writer.cond:
            total = sum(r[3] for r in rows)
            if dead:
                total += sum(dead_sizes)
            if self.on_full != "drop" and not self._room(total):
                self._make_room(writer, total, may_block)
            group = writer.group
            admitted = []
            events = 0
            for row in rows:
                ok = self._room(row[3])  # always true unless on_full="drop"
                admitted.append(ok)
                if ok:
                    group.rows.append(row)
                    group.nbytes += row[3]
                    self._inflight += row[3]
                    self._counts["appended"] += row[2]
                    events += row[2]
                else:
                    self._drop(writer, row[2])
            if dead:
                events += self._admit_dead(writer, group, dead, dead_sizes, admitted)
            if wait:
                writer.join(group)
            else:
                if future is None:
                    group.unwaited += events  # nobody is told of a failed commit but flush() and `lost`
                if group and not group.started:
                    group.started = time.monotonic()  # starts the background flush timer
                    writer.wake()
            if future is not None:
                # (loop, one list of (future, result) per row and dead letter):
                # the commit resolves those of what was admitted.
                loop, targets = future
                kept = [pair for target, ok in zip(targets, admitted) if ok for pair in target]
                if kept:
                    group.futures.append((loop, kept))
                    writer.wake()
        return group, admitted

    def _admit_dead(self, writer: Writer, group: Group, dead: list[tuple], sizes, admitted: list[bool]) -> int:
        """Queue dead-letter rows under the cap's policy (cond held); how many were admitted."""
        n = 0
        for row, size in zip(dead, sizes):
            ok = self._room(size)
            admitted.append(ok)
            if ok:
                group.dead.append(row)
                group.dead_nbytes += size
                self._inflight += size
                self._counts["dead_lettered"] += 1
                n += 1
            else:
                self._drop(writer, 1)
        return n
