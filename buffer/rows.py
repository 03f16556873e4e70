"""The buffer file's ``events``, ``dead_letters`` and ``counters``: the one home of their SQL.

The writer, dead-letter replay and purge, the loader's staging, acks,
quarantine and dropping all read and change these tables through the
functions here, so the size counters (``pending_bytes``, the sum of
``events.nbytes``; ``dead_bytes``, the dead letters' payload and reason
characters) are kept in step in one place. Each function runs in the
caller's transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from typing import Any

from bqspool.schemas.display import MAX_REASON, safe_text, show
from bqspool.schemas.errors import UnknownStreamError

MAX_DEAD_PAYLOAD = 1024 * 1024  # characters of raw payload kept in a dead-letter row

INSERT_EVENT = "INSERT INTO events (stream, payload, n, nbytes, created_us) VALUES (?, ?, ?, ?, ?)"
INSERT_DEAD = "INSERT INTO dead_letters (stream, event_id, payload, reason, created_us) VALUES (?, ?, ?, ?, ?)"
ADD_COUNTER = "UPDATE counters SET value = value + ? WHERE name = ?"
# Both size counters in one statement; their sum is what the size cap counts.
ADD_USED = (
    "UPDATE counters SET value = value + CASE name WHEN 'pending_bytes' THEN ? ELSE ? END "
    "WHERE name IN ('pending_bytes', 'dead_bytes') RETURNING value"
)
USED_BYTES = "SELECT coalesce(sum(value), 0) FROM counters WHERE name IN ('pending_bytes', 'dead_bytes')"
_RANGE = "stream = ? AND seq BETWEEN ? AND ?"


def stream_text(stream: object) -> str:
    """A stream name as storable, bounded text, whatever the caller passed."""
    return safe_text(stream if type(stream) is str else show(stream), 1024)


def dead_row(stream: object, event_id: str | None, payload: str, reason: str) -> tuple:
    """A ``dead_letters`` row whose every part SQLite can store: bounded, valid UTF-8."""
    return (
        stream_text(stream),
        event_id,
        safe_text(payload, MAX_DEAD_PAYLOAD),
        safe_text(reason, MAX_REASON),
        time.time_ns() // 1000,
    )


def event_id_of(line: str) -> str | None:
    """The ``_event_id`` of a stored event line, or None where the line does not parse as one."""
    try:
        value = json.loads(line).get("_event_id")
    except (ValueError, AttributeError, RecursionError):
        return None
    return value if type(value) is str else None


def dead_row_bytes(row: tuple) -> int:
    """What a dead-letter row counts against the size cap: its payload and
    reason in characters, as SQL's ``length()`` counts them on the way out."""
    return len(row[2]) + len(row[3])


def add_used(conn: sqlite3.Connection, pending: int = 0, dead: int = 0) -> int:
    """Change the size counters; returns what the cap counts now."""
    return sum(r[0] for r in conn.execute(ADD_USED, (pending, dead)).fetchall())


def used_bytes(conn: sqlite3.Connection) -> int:
    return conn.execute(USED_BYTES).fetchone()[0]


def add_counter(conn: sqlite3.Connection, name: str, n: int) -> None:
    conn.execute(ADD_COUNTER, (n, name))


def counters(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT name, value FROM counters").fetchall())


def insert_dead(conn: sqlite3.Connection, rows: list[tuple]) -> int:
    """Store dead-letter rows and count them; returns their bytes."""
    conn.executemany(INSERT_DEAD, rows)
    nbytes = sum(dead_row_bytes(r) for r in rows)
    add_used(conn, 0, nbytes)
    return nbytes


def delete_dead(conn: sqlite3.Connection, where: str, params: Iterable) -> int:
    """Delete the dead letters matching ``where``, uncounting them; returns how many."""
    gone = conn.execute(
        f"DELETE FROM dead_letters WHERE {where} RETURNING length(payload) + length(reason)", list(params)
    ).fetchall()
    add_used(conn, 0, -sum(n for (n,) in gone))
    return len(gone)


DEAD_COLUMNS = ("id", "stream", "event_id", "payload", "reason", "created_us")


def dead_letters(
    conn: sqlite3.Connection, where: str, params: Iterable, *, after_id: int = 0, newest: bool = False, limit: int = -1
) -> list[dict[str, Any]]:
    """Dead letters matching ``where`` with an id above ``after_id``: oldest first,
    or ``newest`` first; at most ``limit`` (-1: all)."""
    order = "DESC" if newest else ""
    found = conn.execute(
        f"SELECT {', '.join(DEAD_COLUMNS)} FROM dead_letters WHERE id > ? AND {where} ORDER BY id {order} LIMIT ?",
        [after_id, *params, limit],
    ).fetchall()
    return [dict(zip(DEAD_COLUMNS, r)) for r in found]


def dead_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]


def dead_count_since(conn: sqlite3.Connection, since_us: int) -> dict[str, int]:
    """Dead letters per stream stored since ``since_us`` (epoch microseconds)."""
    found = conn.execute("SELECT stream, count(*) FROM dead_letters WHERE created_us >= ? GROUP BY stream", (since_us,))
    return {stream: n for stream, n in found}


def revive(conn: sqlite3.Connection, dead_id: int, stream: str, data: bytes, now_us: int) -> bool:
    """Replace dead letter ``dead_id`` with a pending event of ``data``, counting both;
    False if it is gone (another replay or purge took it meanwhile)."""
    gone = conn.execute(
        "DELETE FROM dead_letters WHERE id = ? RETURNING length(payload) + length(reason)", (dead_id,)
    ).fetchone()
    if not gone:
        return False
    conn.execute(INSERT_EVENT, (stream, data.decode("utf-8"), 1, len(data), now_us))
    add_used(conn, len(data), -gone[0])
    return True


def stream_totals(conn: sqlite3.Connection) -> list[tuple[str, int, int, int]]:
    """(stream, events, bytes, oldest created_us) of each stream with pending events."""
    return conn.execute("SELECT stream, sum(n), sum(nbytes), min(created_us) FROM events GROUP BY stream").fetchall()


def oldest_lines(conn: sqlite3.Connection, stream: str, limit: int) -> list[str]:
    """The first ``limit`` pending event lines of a stream."""
    rows = conn.execute("SELECT payload FROM events WHERE stream = ? ORDER BY seq LIMIT ?", (stream, limit))
    return [line for (payload,) in rows for line in payload.split("\n")][:limit]


def streams_pending(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    """Each stream with pending events, and how many."""
    return conn.execute("SELECT stream, sum(n) FROM events GROUP BY stream").fetchall()


def oldest_created_us(conn: sqlite3.Connection, stream: str, lo: int, hi: int) -> int | None:
    """When the oldest row of a stream's seq range was appended (epoch microseconds), or None."""
    row = conn.execute(f"SELECT MIN(created_us) FROM events WHERE {_RANGE}", (stream, lo, hi)).fetchone()
    return row[0] if row else None


def rows_after(conn: sqlite3.Connection, stream: str, seq: int) -> Iterator[tuple[int, int, int, int]]:
    """(seq, events, bytes, created_us) of a stream's rows above ``seq``, in
    order: what a seal covers. (Not the payload: a row's columns after it
    are read without copying it.)"""
    return conn.execute(
        "SELECT seq, n, nbytes, created_us FROM events WHERE stream = ? AND seq > ? ORDER BY seq", (stream, seq)
    )


def read_range(conn: sqlite3.Connection, stream: str, lo: int, hi: int) -> Iterator[tuple[int, str]]:
    """(events, payload) of a stream's rows ``lo``..``hi`` in seq order."""
    return conn.execute(f"SELECT n, payload FROM events WHERE {_RANGE} ORDER BY seq", (stream, lo, hi))


def read_range_raw(conn: sqlite3.Connection, stream: str, lo: int, hi: int) -> Iterator[bytes]:
    """The payloads of ``lo``..``hi`` as bytes: readable even where a damaged
    row is no longer valid UTF-8 (Python's text decoding would fail)."""
    for (raw,) in conn.execute(
        f"SELECT CAST(payload AS BLOB) FROM events WHERE {_RANGE} ORDER BY seq", (stream, lo, hi)
    ).fetchall():
        yield raw


def delete_range(conn: sqlite3.Connection, stream: str, lo: int, hi: int) -> int:
    """Delete a stream's rows ``lo``..``hi`` with their pending bytes; returns the events they held.

    The bytes actually deleted are uncounted, never a caller's record of
    them: the counter cannot go below what is there.
    """
    gone = conn.execute(f"DELETE FROM events WHERE {_RANGE} RETURNING n, nbytes", (stream, lo, hi)).fetchall()
    add_used(conn, -sum(r[1] for r in gone), 0)
    return sum(r[0] for r in gone)


def lines(conn: sqlite3.Connection, stream: str, lo: int, hi: int, first: int, last: int) -> list[str]:
    """Stored event lines ``first``..``last`` (offsets, ``last`` excluded) of the rows ``lo``..``hi``."""
    out: list[str] = []
    seen = 0
    for _, payload in read_range(conn, stream, lo, hi):
        row = payload.split("\n")
        if seen + len(row) > first:
            out += row[max(0, first - seen) : last - seen]
        seen += len(row)
        if seen >= last:
            break
    return out


def unknown_stream(stream: Any, known: list[str]) -> UnknownStreamError:
    """The error for an event of a stream no table has: the nearest known name, if one is near."""
    import difflib

    near = difflib.get_close_matches(stream_text(stream), known, n=1, cutoff=0.6)  # never str(): it may raise
    why = f"did you mean {near[0]}?" if near else "known streams: " + (", ".join(known) or "none: no schema set")
    err = UnknownStreamError(f"unknown stream {stream_text(stream)!r} ({why})")
    err.stream = stream_text(stream)
    return err
