"""The group-commit writer: one thread per process owns the write connection.

Callers put rows into the current :class:`Group` under one lock and, if they
want durability, wait for that group's commit. The writer thread swaps the
group out and writes all of it in one ``BEGIN IMMEDIATE`` transaction, so
many threads pay for one fsync.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable

from bqspool.schemas.errors import BqspoolError

from . import store

log = logging.getLogger("bqspool.buffer")

INSERT_EVENT = "INSERT INTO events (stream, event_id, payload, nbytes, created_us) VALUES (?, ?, ?, ?, ?)"
INSERT_DEAD = "INSERT INTO dead_letters (stream, event_id, payload, reason, created_us) VALUES (?, ?, ?, ?, ?)"
ADD_COUNTER = "UPDATE counters SET value = value + ? WHERE name = ?"


class Group:
    """Everything appended between two commits."""

    __slots__ = ("rows", "dead", "nbytes", "drops", "waiters", "futures", "done", "error", "started")

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.dead: list[tuple] = []
        self.nbytes = 0
        self.drops = 0
        self.waiters = 0
        self.futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.started = 0.0

    def __bool__(self) -> bool:
        return bool(self.rows or self.dead or self.drops)


def _resolve(fut: asyncio.Future, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


class Writer:
    """Owns the write connection and the thread that commits groups."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str,
        busy_timeout_s: float,
        flush_interval: float,
        pragmas: dict[str, object],
        on_commit: Callable[[Group, int], None],
    ):
        self.path = path
        self.flush_interval = flush_interval
        self.busy_timeout_s = busy_timeout_s
        self.cond = threading.Condition(threading.Lock())
        self.group = Group()
        self.writing: Group | None = None
        self.closing = False
        self._on_commit = on_commit
        self._conn = store.connect(path, synchronous=synchronous, busy_timeout_ms=int(busy_timeout_s * 1000))
        for name, value in pragmas.items():
            self._conn.execute(f"PRAGMA {name} = {value}")
        self._thread = threading.Thread(target=self._run, name="bqspool-writer", daemon=True)
        self._thread.start()

    # -- caller side (under self.cond) ------------------------------------

    def wake(self) -> None:
        """Tell the writer there is work; callers hold ``self.cond``."""
        self.cond.notify()

    # -- writer thread ----------------------------------------------------

    def _next_group(self) -> Group | None:
        with self.cond:
            while not self.group and not self.closing:
                self.cond.wait()
            group = self.group
            if not group:
                return None  # closing, nothing left
            # Fire-and-forget appends may linger up to flush_interval so that
            # bursts share a commit; anything waiting cuts the linger short.
            if not group.waiters and not group.futures and not self.closing and self.flush_interval > 0:
                deadline = group.started + self.flush_interval
                while not group.waiters and not group.futures and not self.closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self.cond.wait(remaining)
            self.group = Group()
            self.writing = group
            return group

    def _write(self, group: Group) -> int:
        """Commit one group; returns pending_bytes as seen inside the transaction."""
        with store.transaction(self._conn, busy_timeout_s=self.busy_timeout_s) as conn:
            if group.rows:
                conn.executemany(INSERT_EVENT, group.rows)
                conn.execute(ADD_COUNTER, (group.nbytes, "pending_bytes"))
            if group.dead:
                conn.executemany(INSERT_DEAD, group.dead)
            if group.drops:
                conn.execute(ADD_COUNTER, (group.drops, "dropped"))
            return conn.execute("SELECT value FROM counters WHERE name = 'pending_bytes'").fetchone()[0]

    def _run(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            disk_bytes = -1
            try:
                disk_bytes = self._write(group)
            except BqspoolError as exc:
                group.error = exc
            except sqlite3.Error as exc:
                group.error = BqspoolError(f"buffer write failed: {exc}")
                group.error.__cause__ = exc
            except BaseException as exc:  # never let the writer thread die silently
                group.error = exc
            if group.error is not None:
                unwaited = len(group.rows) + len(group.dead) if not (group.waiters or group.futures) else 0
                log.error("buffer commit of %d events failed: %s", len(group.rows) + len(group.dead), group.error)
                if unwaited:
                    log.error("%d events appended with wait=False were lost", unwaited)
            self._on_commit(group, disk_bytes)
            with self.cond:
                self.writing = None
            group.done.set()
            for loop, fut in group.futures:
                try:
                    loop.call_soon_threadsafe(_resolve, fut, group.error)
                except RuntimeError:
                    pass  # that event loop is closed; nobody is waiting any more

    def stop(self, timeout: float | None = None) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self._thread.join(timeout)
        self._conn.close()

    def alive(self) -> bool:
        return self._thread.is_alive()
