"""What a Buffer holds: stats, dead letters (read, replay, purge) and a peek at pending events."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from bqspool.schemas.decode import decoder
from bqspool.schemas.errors import BufferClosedError, UnknownStreamError

from . import deadletters, rows, store


class InspectMixin:
    """The reading half of :class:`~.core.Buffer` (which provides the attributes below)."""

    path: Path
    max_bytes: int | None
    _coercers: dict
    _counts: dict
    _closed: bool
    _busy_timeout: float

    def _reading(self, fn, *args):  # provided by Buffer
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """Pending events per stream, dead letters, drops and file size.

        ``streams`` maps each stream (every table of the schema set, plus any
        stream with rows) to ``pending`` (events), ``bytes`` (payload bytes)
        and ``oldest_age_s``. ``dropped`` counts drops by every process;
        ``process`` holds this process's own counters.
        """
        now = store.now_us()
        streams: dict[str, dict[str, Any]] = {
            name: {"pending": 0, "bytes": 0, "oldest_age_s": None} for name in self._coercers
        }
        for stream, count, nbytes, oldest in self._reading(rows.stream_totals):
            streams[stream] = {"pending": count, "bytes": nbytes, "oldest_age_s": round((now - oldest) / 1e6, 3)}
        counters = self._reading(rows.counters)
        dead = self._reading(rows.dead_count)
        meta = self._reading(store.meta)
        size = sum(p.stat().st_size for p in (self.path, self.path.with_name(self.path.name + "-wal")) if p.exists())
        moved = meta.get("moved_aside")
        return {
            "path": str(self.path),
            "buffer_id": meta.get("buffer_id"),
            "format_version": store.FORMAT_VERSION,
            "streams": streams,
            "pending": sum(s["pending"] for s in streams.values()),
            "pending_bytes": counters.get("pending_bytes", 0),
            "dead_letters": dead,
            "dropped": counters.get("dropped", 0),
            "file_bytes": size,
            "max_bytes": self.max_bytes,
            # A corrupt file moved aside when this one started, as recorded
            # in the file: every process sees it, not just the one that moved it.
            "recovered_from": json.loads(moved)["path"] if moved else None,
            "lost": counters.get("lost", 0),
            "dead_bytes": counters.get("dead_bytes", 0),
            "process": dict(self._counts),
        }

    def dead_letters(self, limit: int | None = 100, *, stream: str | None = None) -> list[dict[str, Any]]:
        """The newest dead-letter rows (all with ``limit=None``), of one stream or all:
        id, stream, event_id, payload, reason, created_us."""
        return self._reading(deadletters.newest, limit, stream)

    def replay_dead_letters(
        self, *, stream: str | None = None, ids: list[int] | None = None
    ) -> deadletters.ReplayReport:
        """Check dead letters again against this buffer's schema set and make
        the ones that pass pending events, keeping their event ids (see
        :mod:`bqspool.buffer.deadletters`). The size cap does not apply: this
        is an operator's explicit step."""
        with self._side_connection() as conn:
            return deadletters.replay(conn, self._coercers, stream=stream, ids=ids, busy_timeout_s=self._busy_timeout)

    def purge_dead_letters(
        self,
        *,
        stream: str | None = None,
        ids: list[int] | None = None,
        before_us: int | None = None,
        everything: bool = False,
    ) -> int:
        """Delete dead letters by stream, id or age (``created_us`` before
        ``before_us``), or all of them with ``everything=True``; returns how many."""
        with self._side_connection() as conn:
            return deadletters.purge(
                conn,
                stream=stream,
                ids=ids,
                before_us=before_us,
                everything=everything,
                busy_timeout_s=self._busy_timeout,
            )

    @contextlib.contextmanager
    def _side_connection(self):
        """A connection of its own for an operator's step, closed after it."""
        if self._closed:
            raise BufferClosedError(f"buffer {self.path} is closed")
        conn = store.connect(self.path, busy_timeout_ms=int(self._busy_timeout * 1000))
        try:
            yield conn
        finally:
            conn.close()

    def peek(self, stream: str, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest pending events of a stream, decoded back to Python values."""
        if stream not in self._coercers:
            raise UnknownStreamError("unknown stream", stream=stream)
        decode = decoder(self._coercers[stream].table)
        return [decode(json.loads(line)) for line in self._reading(rows.oldest_lines, stream, limit)]
