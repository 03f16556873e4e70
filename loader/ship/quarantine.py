"""Quarantined batches: list, retry and drop them (``bqspool quarantine``).

A batch is quarantined when it cannot be staged (a row that no longer
parses as its table), when its object name is taken by other bytes, or
or, in files written by earlier versions, when both halves of it were
rejected by load jobs. Each function is one transaction on the buffer
file, fenced by the caller's buffer lease so an operator's step never races
a running ship.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from bqspool.buffer import opening, rows, store
from bqspool.buffer.store import now_us, transaction

from ..process import new_holder
from .buffer_lease import Fence, acquire_lease, check_fence, release_lease
from .ledger import Batch, batches, delete_rows, prepare


def quarantined(conn: sqlite3.Connection) -> list[Batch]:
    """The quarantined batches, with their reasons."""
    return batches(conn, "quarantined")


@contextlib.contextmanager
def operator_session(buffer: str | Path, lease_s: float = 60.0) -> Iterator[tuple[sqlite3.Connection, Fence]]:
    """A connection to ``buffer`` under the drain lease, for an operator's step:
    it never races a drain (LeaseHeldError while one runs). Closed after."""
    path = Path(buffer)
    _, in_use = opening.open_file(path, check="none")
    conn = store.connect(path)
    try:
        prepare(conn)
        fence = acquire_lease(conn, f"operator:{new_holder()}", lease_s, path)
        try:
            yield conn, fence
        finally:
            release_lease(conn, fence)
    finally:
        conn.close()
        opening.release(in_use)


def list_batches(buffer: str | Path) -> list[Batch]:
    """The quarantined batches of ``buffer``, with their reasons."""
    path = Path(buffer)
    _, in_use = opening.open_file(path, check="none")
    conn = store.connect(path)
    try:
        prepare(conn)
        return quarantined(conn)
    finally:
        conn.close()
        opening.release(in_use)


def retry_batches(buffer: str | Path, batch_ids: list[str] | None = None) -> int:
    """:func:`retry` on ``buffer``, under the drain lease; how many batches."""
    with operator_session(buffer) as (conn, fence):
        return retry(conn, batch_ids, fence)


def drop_batches(buffer: str | Path, batch_ids: list[str]) -> tuple[int, int]:
    """:func:`drop` on ``buffer``, under the drain lease; (batches, events)."""
    with operator_session(buffer) as (conn, fence):
        return drop(conn, batch_ids, fence)


def retry(conn: sqlite3.Connection, batch_ids: list[str] | None = None, fence: Fence | None = None) -> int:
    """Put quarantined batches (all, or those named) back in line, each in the
    state it was held in and loaded on its own; returns how many."""
    with transaction(conn):
        check_fence(conn, fence)
        sql = (
            "UPDATE batches SET state = coalesce(held_from, 'uploaded'), solo = 1, error = NULL, load_id = NULL, "
            "held_from = NULL, updated_us = ? WHERE state = 'quarantined'"
        )
        params: list = [now_us()]
        if batch_ids:
            sql += f" AND batch_id IN ({','.join('?' * len(batch_ids))})"
            params += batch_ids
        return conn.execute(sql, params).rowcount


def drop(conn: sqlite3.Connection, batch_ids: list[str], fence: Fence | None = None) -> tuple[int, int]:
    """Give up on quarantined batches: their events move to dead letters.

    Returns (batches dropped, events dead-lettered). A stored row that is not
    valid UTF-8 any more (a flipped byte) is read as bytes and kept with its
    bad bytes escaped.
    """
    dropped = events = 0
    with transaction(conn):
        check_fence(conn, fence)
        for b in [b for b in quarantined(conn) if b.batch_id in set(batch_ids)]:
            reason = f"dropped from quarantined batch {b.batch_id}: {b.error}"
            for raw in rows.read_range_raw(conn, b.stream, b.seq_lo, b.seq_hi):
                lines = raw.decode("utf-8", "backslashreplace").split("\n")
                events += len(lines)
                rows.insert_dead(
                    conn, [rows.dead_row(b.stream, rows.event_id_of(line), line, reason) for line in lines]
                )
            delete_rows(conn, b)
            conn.execute(
                "UPDATE batches SET state = 'dropped', updated_us = ? WHERE batch_id = ? AND state = 'quarantined'",
                (now_us(), b.batch_id),
            )
            dropped += 1
    return dropped, events
