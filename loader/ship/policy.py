"""When a stream ships: when it would fill a target object, or when its oldest event reaches ``max_delay``.

Each object costs requests (an upload now; a summary's share and an archive
file's later), so the ship stage makes as few as freshness allows: a
stream is *due* when its pending data would fill ``target_bytes`` of
Parquet, or when its oldest pending event is ``max_delay`` old, or when an
earlier ship left some of its batches sealed or staged. A quiet stream is
never due, and costs nothing. Objects per day then follow the data: at
most ``max(data / target_bytes, hosts x active tables x (1 day / max_delay))``.

The check reads the buffer file alone and sends no request: the oldest row
of each stream is one index lookup, and the per-stream byte sums run only
when the whole buffer holds enough bytes for some stream to be due by size.
Parquet bytes are estimated from the stored bytes, at the ratio the
stream's last shipped batch had (:data:`DEFAULT_RATIO` before the first).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from bqspool.buffer import rows

# Parquet (zstd) bytes per stored byte (JSON lines) before a stream has
# shipped a batch: on the bundled sets' events it is 0.1 to 0.3; the lower
# end, so a first object errs on the small side, never past the target.
DEFAULT_RATIO = 0.3


@dataclass(frozen=True)
class Due:
    """Why a stream ships now: ``size`` (then only whole objects ship; the rest waits),
    ``age`` or ``unfinished`` (then everything pending ships)."""

    kind: Literal["size", "age", "unfinished"]
    why: str

    def __str__(self) -> str:
        return self.why


class ShipPolicy:
    """Which streams are due; learns each stream's Parquet-to-stored ratio from what shipped."""

    def __init__(self, target_bytes: int, max_delay: float):
        self.target_bytes, self.max_delay = target_bytes, max_delay
        self._ratio: dict[str, float] = {}

    def stored_target(self, stream: str) -> int:
        """The stored bytes that make about ``target_bytes`` of Parquet for ``stream``."""
        return max(1, int(self.target_bytes / self._ratio.get(stream, DEFAULT_RATIO)))

    def learn(self, stream: str, stored_bytes: int, object_bytes: int) -> None:
        """Remember what a shipped batch of ``stream`` weighed, stored and as Parquet."""
        if stored_bytes > 0 and object_bytes > 0:
            self._ratio[stream] = max(0.01, min(10.0, object_bytes / stored_bytes))

    def due(self, conn: sqlite3.Connection, streams: Iterable[str], now: float | None = None) -> dict[str, Due]:
        """The streams of ``streams`` that are due, each with why."""
        now_us = int((time.time() if now is None else now) * 1_000_000)
        wanted = list(streams)
        out = {
            s: Due("unfinished", "an earlier ship left batches of it")
            for (s,) in conn.execute("SELECT DISTINCT stream FROM batches WHERE state IN ('sealed', 'staged')")
            if s in wanted
        }
        for stream in wanted:
            if stream in out:
                continue
            row = conn.execute(
                "SELECT created_us FROM events WHERE stream = ? ORDER BY seq LIMIT 1", (stream,)
            ).fetchone()
            if row is not None and now_us - row[0] >= self.max_delay * 1_000_000:
                age = (now_us - row[0]) / 1e6
                out[stream] = Due("age", f"its oldest event is {age:.0f}s old (max_delay {self.max_delay:g}s)")
        rest = [s for s in wanted if s not in out]
        if rest and rows.counters(conn).get("pending_bytes", 0) >= min(self.stored_target(s) for s in rest):
            for stream in rest:
                (nbytes,) = conn.execute(
                    "SELECT coalesce(sum(nbytes), 0) FROM events WHERE stream = ?", (stream,)
                ).fetchone()
                if nbytes >= self.stored_target(stream):
                    out[stream] = Due("size", f"{nbytes} bytes pending fill a {self.target_bytes}-byte object")
        return out
