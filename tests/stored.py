"""Reading a buffer file the way the loader does: a stored row holds one or
more events as JSON lines, each with its ``_event_id``."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter


def stored_lines(conn: sqlite3.Connection, stream: str | None = None) -> list[str]:
    sql, params = "SELECT payload FROM events ORDER BY seq", ()
    if stream is not None:
        sql, params = "SELECT payload FROM events WHERE stream = ? ORDER BY seq", (stream,)
    return [line for (payload,) in conn.execute(sql, params) for line in payload.split("\n")]


def stored_ids(conn: sqlite3.Connection) -> Counter:
    """How many times each event id is stored."""
    return Counter(json.loads(line)["_event_id"] for line in stored_lines(conn))


def pending_events(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(sum(n), 0) FROM events").fetchone()[0]
