"""Reading a buffer file independently of bqspool, with sqlite-utils.

The crash, kill and exactly-once tests check what is in the file through
these, never through bqspool's own reader, so the code under test is not
its own oracle. A stored row holds one or more events as JSON lines, each
with its ``_event_id``.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import sqlite_utils


def sqlite_utils_db(path_or_conn: str | Path | sqlite3.Connection) -> sqlite_utils.Database:
    return sqlite_utils.Database(path_or_conn)


def _db(source) -> sqlite_utils.Database:
    return source if isinstance(source, sqlite_utils.Database) else sqlite_utils.Database(source)


def stored_lines(source, stream: str | None = None) -> list[str]:
    """Every pending event's stored line, in seq order (of one stream, or all)."""
    rows = _db(source)["events"].rows_where(
        "stream = ?" if stream else None, [stream] if stream else [], order_by="seq", select="payload"
    )
    return [line for r in rows for line in r["payload"].split("\n")]


def stored_ids(source) -> Counter:
    """How many times each event id is stored."""
    return Counter(json.loads(line)["_event_id"] for line in stored_lines(source))


def pending_events(source) -> int:
    return _db(source).execute("SELECT coalesce(sum(n), 0) FROM events").fetchone()[0]


def batch_states(source) -> Counter:
    return Counter(r["state"] for r in _db(source)["batches"].rows)


def counters(source) -> dict[str, int]:
    return {r["name"]: r["value"] for r in _db(source)["counters"].rows}
