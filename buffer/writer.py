"""Group commit: everything queued between two commits goes in one transaction.

Callers put rows into the current :class:`Group` under one lock. A caller
that wants durability waits for its group's commit, and if no commit is in
progress it *leads*: it takes the group and commits it on its own thread,
so an uncontended durable append costs one transaction and no thread
hand-off. While one commit runs, everything appended meanwhile gathers in
the next group, which the next leader commits in one go: many threads pay
for one fsync. A leader that is one of the threads the last commit woke
holds its group open for a moment while the others come back (see
``Writer.gather_idle_s``). A background thread commits what nobody waits for
(``wait=False`` appends and asyncio appends) after at most
``flush_interval`` seconds.
"""

from __future__ import annotations

import _thread
import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bqspool.schemas.display import safe_text
from bqspool.schemas.errors import BqspoolError

from . import rows, store
from .rows import INSERT_DEAD, INSERT_EVENT, MAX_DEAD_PAYLOAD, dead_row, dead_row_bytes, event_id_of

log = logging.getLogger("bqspool.buffer")

# Exceptions that one row's values raise while SQLite binds or stores them
# (text that is not UTF-8, an int past 64 bits, a value past SQLite's
# length limit). Anything else (I/O, disk full, corruption, a lock) is the
# file's, and fails the whole group.
ROW_ERRORS = (
    ValueError,
    TypeError,
    OverflowError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    sqlite3.IntegrityError,
)


class Group:
    """Everything appended between two commits."""

    __slots__ = (
        "rows",
        "dead",
        "nbytes",
        "dead_nbytes",
        "drops",
        "lost",
        "unwaited",
        "waiters",
        "sleepers",
        "futures",
        "done",
        "error",
        "started",
        "seconds",
    )

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.dead: list[tuple] = []
        self.nbytes = 0
        self.dead_nbytes = 0
        self.drops = 0
        self.lost = 0  # events an earlier failed commit lost: counted in the file with this one
        self.unwaited = 0  # events and dead letters appended with wait=False and no future
        self.waiters = 0
        # Each caller asleep until this group commits holds a lock of its
        # own here, and the commit releases it: the callers wake without
        # queueing on the writer's lock one after the other, which on a
        # loaded machine cost more than the fsync they shared.
        self.sleepers: list = []
        # Per event loop, the futures of that loop's appends in this group,
        # each with the result it gets once committed (the event's id).
        self.futures: list[tuple[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, object]]]] = []
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.started = 0.0
        self.seconds = 0.0  # how long its commit took (for the metrics)

    def events(self) -> int:
        """Events in the group's rows (a row may hold many)."""
        return sum(r[2] for r in self.rows)

    def __bool__(self) -> bool:
        return bool(self.rows or self.dead or self.drops or self.lost)


def _resolve_all(futs: list[tuple[asyncio.Future, object]], error: BaseException | None) -> None:
    for fut, result in futs:
        if fut.done():  # cancelled by its awaiter
            continue
        if error is None:
            fut.set_result(result)
        else:
            fut.set_exception(error)


class Writer:
    """Owns the write connection; commits groups on callers' or its own thread.

    ``cond`` guards ``group``, ``busy``, ``writing`` and ``gathering``; the
    connection is used only by whoever set ``busy``.
    """

    # Gathering: a leader that arrives within gather_idle_s of the last
    # commit, with fewer waiters than that commit had, is one of the threads
    # it just woke, and the others are on their way back with their next
    # append. Committing at once would split them into a group of one and a
    # group of the rest (8 threads averaged 4.3 events a commit); waiting
    # while they keep arriving, at most gather_idle_s apart and
    # gather_max_s in all, fills the group (8.0 a commit, +30% throughput).
    # A leader arriving later than that is not in such a loop and commits
    # at once, so sparse appends pay nothing.
    gather_idle_s = 0.0002
    gather_max_s = 0.002

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
        self._lock = lock = threading.Lock()
        self.cond = threading.Condition(lock)  # the lock callers hold to queue rows
        # The background thread waits on its own condition over the same
        # lock, so commits wake it only when there is work for it.
        self._bg = threading.Condition(lock)
        self.group = Group()
        self.writing: Group | None = None
        self.busy = False
        self.closing = False
        # Gathering (see gather_idle_s): the group a leader holds open, the
        # waiters it waits for, when the last commit ended, and the
        # condition the leader sleeps on.
        self.gathering: Group | None = None
        self._want = 1
        self._ended = 0.0
        self._gather_cv = threading.Condition(lock)
        self._on_commit = on_commit  # called with cond held
        self._conn = store.connect(path, synchronous=synchronous, busy_timeout_ms=int(busy_timeout_s * 1000))
        for name, value in pragmas.items():
            self._conn.execute(f"PRAGMA {name} = {value}")
        self._thread = threading.Thread(target=self._run, name="bqspool-writer", daemon=True)
        self._thread.start()

    def join(self, group: Group) -> None:
        """Count a caller that will wait for ``group``'s commit; callers hold ``cond``.

        Such a caller commits it or waits for whoever does (see wait_for),
        and a leader holding the group open is woken once enough have come.
        """
        group.waiters += 1
        if self.gathering is group and group.waiters >= self._want:
            self._gather_cv.notify()

    def wake(self) -> None:
        """Tell the background thread there is work; callers hold ``cond``."""
        self._bg.notify()

    # -- committing (cond held on entry and exit) ---------------------------

    def _commit_current(self) -> None:
        group = self.group
        self.group = Group()
        self.busy = True
        self.writing = group
        disk_bytes = -1
        self.cond.release()
        began = time.perf_counter()
        try:
            disk_bytes = self._write(group)
        except BqspoolError as exc:
            group.error = exc
        except sqlite3.Error as exc:
            group.error = BqspoolError(f"buffer write failed: {exc}")
            group.error.__cause__ = exc
        except BaseException as exc:  # never leave callers waiting forever
            group.error = exc
        finally:
            group.seconds = time.perf_counter() - began
            self.cond.acquire()
        if group.error is not None:
            log.error("buffer commit of %d events failed: %s", group.events() + len(group.dead), group.error)
            if not (group.waiters or group.futures):
                log.error("%d events appended with wait=False were lost", group.events() + len(group.dead))
        self.busy = False
        self.writing = None
        self._want = max(1, group.waiters)
        self._ended = time.monotonic()
        self._on_commit(group, disk_bytes)
        group.done.set()
        # One hand-off per event loop, not per future: call_soon_threadsafe
        # writes to the loop's wake-up pipe each time, and a group commit
        # of a thousand asyncio appends would otherwise wake it a thousand times.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, object]]] = {}
        for loop, futs in group.futures:
            by_loop.setdefault(loop, []).extend(futs)
        for loop, futs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve_all, futs, group.error)
            except RuntimeError:
                pass  # that event loop is closed; nobody is waiting any more
        for sleeper in group.sleepers:
            sleeper.release()
        if self.group.waiters:
            self._pick_leader(self.group)
        elif self.group or self.closing:
            # What gathered meanwhile is the background thread's; and a closing
            # writer's thread, which waited while this group had a waiter, must
            # see that it may end now (close() joins it).
            self._bg.notify()

    def _write(self, group: Group) -> int:
        """One transaction; returns the bytes the size cap counts, as seen inside it.

        Should one row fail to store for a reason of its own (see
        ``ROW_ERRORS``; append checks every row so this should not happen),
        the transaction is rolled back and written again row by row, and
        each failing row becomes a dead letter with its reason: one bad row
        never costs the others.
        """
        try:
            with store.transaction(self._conn, busy_timeout_s=self.busy_timeout_s) as conn:
                if group.rows:
                    conn.executemany(INSERT_EVENT, group.rows)
                if group.dead:
                    conn.executemany(INSERT_DEAD, group.dead)
                return self._count(conn, group, group.nbytes, group.dead_nbytes)
        except ROW_ERRORS as exc:
            log.error("a row of a commit could not be stored (%s); storing the group row by row", type(exc).__name__)
        with store.transaction(self._conn, busy_timeout_s=self.busy_timeout_s) as conn:
            nbytes, dead_nbytes = 0, 0
            for row in group.rows:
                try:
                    conn.execute(INSERT_EVENT, row)
                    nbytes += row[3]
                except ROW_ERRORS as exc:
                    for dead in _dead_rows_of(row, exc):
                        conn.execute(INSERT_DEAD, dead)
                        dead_nbytes += dead_row_bytes(dead)
            for row in group.dead:
                try:
                    conn.execute(INSERT_DEAD, row)
                except ROW_ERRORS as exc:
                    row = dead_row("?", None, "", f"dead letter could not be stored: {type(exc).__name__}")
                    conn.execute(INSERT_DEAD, row)
                dead_nbytes += dead_row_bytes(row)
            return self._count(conn, group, nbytes, dead_nbytes)

    @staticmethod
    def _count(conn: sqlite3.Connection, group: Group, nbytes: int, dead_nbytes: int) -> int:
        if group.drops:
            rows.add_counter(conn, "dropped", group.drops)
        if group.lost:
            rows.add_counter(conn, "lost", group.lost)
        # Keeps the size cap's view of the file current at no extra query.
        return rows.add_used(conn, nbytes, dead_nbytes)

    def wait_for(self, group: Group, timeout: float | None = None) -> bool:
        """Block until ``group`` is committed, leading the commit if nobody is.

        Call without ``cond`` held, after ``join(group)``. Returns False on
        timeout; the group is then committed by others or the background
        thread.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        gathered = False
        cond = self.cond
        cond.acquire()
        while not group.done.is_set():
            if not self.busy and self.gathering is None:
                # Every earlier group is done (commits run in order), so
                # ``group`` is the current one: commit it here.
                if not gathered and group.waiters < self._want and time.monotonic() - self._ended < self.gather_idle_s:
                    gathered = True
                    self._gather(group)
                    continue
                self._commit_current()
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._give_up(group, None)
                cond.release()
                return False
            me = _thread.allocate_lock()
            me.acquire()
            group.sleepers.append(me)
            cond.release()
            woken = me.acquire(True, -1 if remaining is None else remaining)
            if woken and group.done.is_set():
                return True  # the usual case, and it takes no shared lock
            cond.acquire()
            if not woken and not group.done.is_set():
                self._give_up(group, me)
                cond.release()
                return False
            # Otherwise the last commit picked us to lead this group: loop.
        cond.release()
        return True

    def _pick_leader(self, group: Group) -> None:
        """Wake one sleeping caller of ``group`` to commit it (cond held).

        With none asleep, a caller still on its way leads when it arrives.
        """
        if group.sleepers:
            group.sleepers.pop(0).release()

    def _give_up(self, group: Group, me) -> None:
        """A caller of ``group`` stops waiting (cond held)."""
        group.waiters -= 1
        if me is not None and me in group.sleepers:
            group.sleepers.remove(me)
        elif me is not None and not self.busy:
            self._pick_leader(group)  # we were picked to lead: pass it on
        if not group.waiters:
            self._bg.notify()  # nobody waits on it now: the background thread commits it

    def _gather(self, group: Group) -> None:
        """Hold ``group`` open while waiters keep joining (cond held)."""
        self.gathering = group
        end = time.monotonic() + self.gather_max_s
        seen = group.waiters
        while group.waiters < self._want:
            left = min(self.gather_idle_s, end - time.monotonic())
            if left <= 0:
                break
            self._gather_cv.wait(left)
            if group.waiters == seen:
                break  # nobody came for a while: they are not in a loop of appends
            seen = group.waiters
        self.gathering = None

    # -- the background thread ------------------------------------------------

    def _run(self) -> None:
        with self.cond:
            while True:
                group = self.group
                # A group with waiters is committed by one of them (see wait_for).
                if self.busy or not group or group.waiters:
                    if self.closing and not group and not self.busy:
                        return
                    self._bg.wait()
                    continue
                # Nobody may be waiting on this group: let fire-and-forget
                # appends gather for up to flush_interval, so bursts share a
                # commit. A durable caller arriving meanwhile leads it.
                if not (group.waiters or group.futures or self.closing):
                    remaining = group.started + self.flush_interval - time.monotonic()
                    if remaining > 0:
                        self._bg.wait(remaining)
                        continue
                self._commit_current()

    def stop(self, timeout: float | None = None) -> None:
        with self.cond:
            self.closing = True
            self._bg.notify()
        self._thread.join(timeout)
        self._conn.close()


def _dead_rows_of(row: tuple, exc: BaseException) -> list[tuple]:
    """Dead letters for a stored events row that failed: one per event, with its id where it can be read."""
    reason = f"could not be stored: {type(exc).__name__}: {safe_text(str(exc), 200)}"
    out = []
    for line in safe_text(row[1], MAX_DEAD_PAYLOAD).split("\n"):
        out.append(dead_row(row[0], event_id_of(line), line, reason))
    return out
