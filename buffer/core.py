"""``Buffer``: the embeddable write-ahead buffer apps append events to."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from bqspool.schemas import SchemaSet, load_schema_set
from bqspool.schemas.coerce import DEFAULT_MAX_ROW_BYTES, Coercer
from bqspool.schemas.errors import (
    BufferClosedError,
    ConfigError,
    EventsLostError,
    UnknownStreamError,
    ValidationError,
)

from . import configured, opening, registry, rows, store
from .admission import AdmissionMixin
from .aio import AsyncAppendMixin, AsyncBatch
from .ids import uuid7, uuid7_many
from .inspect import InspectMixin
from .pack import Chunk, pack_events
from .payload import RateLimitedLog, raw_payload
from .rows import dead_row, stream_text, unknown_stream
from .writer import Group, Writer

log = logging.getLogger("bqspool.buffer")
T = TypeVar("T")

DURABILITY = {"full": "FULL", "normal": "NORMAL"}
ON_FULL = ("block", "raise", "drop")


class Buffer(AdmissionMixin, AsyncAppendMixin, InspectMixin):
    """A durable local spool of events, one SQLite file in WAL mode.

    ``Buffer(path, schemas="leafloaf")`` opens (or creates, mode 0600) the
    file, checks and migrates it (``Buffer()``: the configured buffer and
    schema set, from ``BQSPOOL_BUFFER`` / ``BQSPOOL_SCHEMAS`` or
    ``bqspool.toml``, as every command finds them; see :mod:`.configured`), and validates each appended event against
    the stream's table. Safe to share between threads and asyncio tasks;
    several processes may open the same file.

    Durability contract: with ``wait=True`` (the default) ``append`` returns
    once the event is committed: it survives kill -9 of the process with
    ``durability="normal"`` and power loss with ``durability="full"`` (the
    default). With ``wait=False`` the call returns at once; the event is
    committed within ``flush_interval`` seconds plus one commit, and
    :meth:`flush`/:meth:`close` (also run at interpreter exit) force it.

    Size cap: when ``max_bytes`` of pending payload is reached, ``on_full``
    decides: ``"block"`` (default) waits up to ``block_timeout`` seconds for
    the loader to make room, then raises :class:`BufferFullError`;
    ``"raise"`` raises at once; ``"drop"`` drops the new event, counts and
    logs it and returns ``None``. Across processes the cap is enforced on the
    last committed size each process has seen, so it can be exceeded by what
    is in flight at that moment.

    Invalid events: with ``strict=True`` append raises
    :class:`ValidationError` naming the field; otherwise the event goes to
    the ``dead_letters`` table with its reason and append returns its id.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        schemas: str | os.PathLike | SchemaSet | None = None,
        *,
        durability: str = "full",
        max_bytes: int | None = 1024**3,
        on_full: str = "block",
        block_timeout: float = 10.0,
        strict: bool = False,
        unknown_fields: str = "error",
        max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
        flush_interval: float = 0.05,
        busy_timeout: float = 30.0,
        check: str = "quick",
        pragmas: dict[str, object] | None = None,
    ):
        if durability not in DURABILITY:
            raise ConfigError(f"durability must be one of {sorted(DURABILITY)}, got {durability!r}")
        if on_full not in ON_FULL:
            raise ConfigError(f"on_full must be one of {ON_FULL}, got {on_full!r}")
        if check not in ("quick", "full", "none"):
            raise ConfigError(f"check must be quick, full or none, got {check!r}")
        if max_bytes is not None and max_bytes <= 0:
            raise ConfigError("max_bytes must be positive (or None for no cap)")
        if path is None:
            path, configured_schemas = configured.writer_settings()
            schemas = configured_schemas if schemas is None else schemas
        self.path = Path(path).expanduser().absolute()
        self.schemas = load_schema_set(schemas) if schemas is not None else None
        self.durability = durability
        self.max_bytes = max_bytes
        self.on_full = on_full
        self.block_timeout = block_timeout
        self.strict = strict
        self.flush_interval = flush_interval
        self._busy_timeout = busy_timeout
        self._pragmas = dict(pragmas or {})
        self._coercers: dict[str, Coercer] = {}
        if self.schemas is not None:
            for table in self.schemas.tables():
                self._coercers[table.name] = Coercer(table, unknown_fields=unknown_fields, max_row_bytes=max_row_bytes)
        self._in_use: int | None
        self.recovered_from, self._in_use = opening.open_file(self.path, check=check)
        self._counts = {"appended": 0, "dead_lettered": 0, "dropped": 0, "lost": 0}
        self._drop_log = RateLimitedLog(logging.WARNING)
        self._dead_log = RateLimitedLog(logging.WARNING)
        self._closed = False
        self._observers: list[Callable[[Group], None]] = []  # see observe()
        self._init_process_state()
        registry.add(self)

    # -- process-local state (rebuilt after fork) ---------------------------

    def _init_process_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()  # guards lazy start of the writer and the reader
        self._writer: Writer | None = None
        self._reader: sqlite3.Connection | None = None
        self._inflight = 0
        self._async_batches: dict[asyncio.AbstractEventLoop, AsyncBatch] = {}
        self._unreported_lost = 0  # wait=False events lost since the last flush() reported it
        self._lost_error: BaseException | None = None
        self._disk_bytes = self._read_used_bytes()

    def _reset_after_fork(self) -> None:
        # The parent's writer thread does not exist here and its connection
        # must not be used from this process: start over. Rows the parent
        # had queued are the parent's to commit.
        self._init_process_state()

    def _ensure_writer(self) -> Writer:
        writer = self._writer
        if writer is not None:
            return writer
        with self._lock:
            if self._closed:
                raise BufferClosedError(f"buffer {self.path} is closed")
            if self._writer is None:
                self._writer = Writer(
                    self.path,
                    synchronous=DURABILITY[self.durability],
                    busy_timeout_s=self._busy_timeout,
                    flush_interval=self.flush_interval,
                    pragmas=self._pragmas,
                    on_commit=self._committed,
                )
            return self._writer

    def observe(self, fn: Callable[[Group], None]) -> None:
        """Call ``fn(group)`` after each commit attempt of this process (the
        metrics do): its rows (stream first, event count third), dead letters,
        drops, ``seconds`` and ``error``. It runs under the writer's lock, so
        it must be quick and must not append."""
        self._observers.append(fn)

    def _committed(self, group: Group, disk_bytes: int) -> None:
        # Runs after each commit attempt, with the writer's lock held.
        for fn in self._observers:
            try:
                fn(group)
            except Exception:  # an observer's bug never fails a commit
                log.exception("a commit observer failed")
        self._inflight -= group.nbytes + group.dead_nbytes
        if group.error is None:
            self._disk_bytes = disk_bytes
        elif group.unwaited:
            # Durable callers got the error from append(); wait=False
            # callers learn of it from flush() and the `lost` counters,
            # this process's and, with the next commit, the file's.
            self._counts["lost"] += group.unwaited
            self._unreported_lost += group.unwaited
            self._lost_error = group.error
            assert self._writer is not None
            self._writer.group.lost += group.unwaited

    # -- reading ------------------------------------------------------------

    def _reading(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on this buffer's reader connection."""
        with self._lock:
            if self._reader is None:
                self._reader = store.connect(self.path, busy_timeout_ms=int(self._busy_timeout * 1000))
            return fn(self._reader, *args)

    def _read_used_bytes(self) -> int:
        """Pending events' and dead letters' bytes: what the size cap counts."""
        return self._reading(rows.used_bytes)

    # -- appending ----------------------------------------------------------

    def _unknown_stream(self, stream: Any) -> UnknownStreamError:
        return unknown_stream(stream, sorted(self._coercers))

    def _dead_row(self, stream: Any, event: Any, event_id: str, exc: ValidationError) -> tuple:
        """The dead-letter row for an invalid event; raises instead in strict mode.

        Every part is bounded, valid UTF-8 text, so the row cannot fail the
        commit it joins. The log line names the stream and field only: a
        value in the wrong field may be a secret.
        """
        if self.strict:
            raise exc
        if isinstance(exc, UnknownStreamError):  # names the stream alone, never a value
            self._dead_log("event sent to dead letters: %s", exc)
        else:
            self._dead_log(
                "event sent to dead letters: stream %s, field %r (reason in the dead_letters table)",
                stream_text(stream),
                exc.path or None,
            )
        log.debug("dead letter %s: %s", event_id, exc)
        return dead_row(stream, event_id, raw_payload(event), str(exc))

    def dead_letter(self, stream: str, payload: Any, reason: str, *, wait: bool = True) -> str:
        """Record something that could not become an event (e.g. a line that is
        not JSON) as a dead letter with ``reason``; returns its id."""
        event_id = uuid7()
        row = dead_row(stream, event_id, raw_payload(payload), reason)
        group, _ = self._enqueue([], [row], wait=wait)
        if wait:
            self._wait(group)
        return event_id

    def validate(self, stream: str, event: Any) -> dict:
        """Check an event without storing it: its coerced columns, or ValidationError."""
        coercer = self._coercers.get(stream) if type(stream) is str else None
        if coercer is None:
            raise self._unknown_stream(stream)
        return coercer.coerce(event)

    def _prepare(self, stream: str, event: Any) -> tuple[tuple | None, tuple | None, str]:
        """Validate one event: (event row, dead-letter row, event_id)."""
        event_id = uuid7()
        coercer = self._coercers.get(stream) if type(stream) is str else None
        if coercer is None:
            return None, self._dead_row(stream, event, event_id, self._unknown_stream(stream)), event_id
        try:
            data = coercer.encode(event, event_id)
        except ValidationError as exc:
            return None, self._dead_row(stream, event, event_id, exc), event_id
        # An events row of one event: (stream, payload, n, UTF-8 bytes, created_us).
        return (stream, data.decode("utf-8"), 1, len(data), store.now_us()), None, event_id

    def _wait(self, group: Group) -> None:
        writer = self._writer
        assert writer is not None
        writer.wait_for(group)
        if group.error is not None:
            raise group.error

    def append(self, stream: str, event: Any, *, wait: bool = True) -> str | None:
        """Validate and store one event; returns its ``event_id``.

        Returns ``None`` when the size cap dropped it (``on_full="drop"``).
        With ``wait=True`` the event is durable when this returns.
        """
        row, dead, event_id = self._prepare(stream, event)
        group, admitted = self._enqueue([row] if row else [], [dead] if dead else [], wait=wait)
        if wait:
            self._wait(group)
        return event_id if admitted[0] else None

    def append_many(self, stream: str, events: Iterable[Any], *, wait: bool = True) -> list[str | None]:
        """Validate and store many events in one commit; ids in input order.

        The valid events are stored as a few rows of up to 1,000 events each
        (see ``pack_events``). In strict mode nothing is stored when any event is
        invalid. Under ``on_full="raise"``/``"block"`` the whole call must
        fit the cap; under ``"drop"`` the stored rows that do not fit are
        dropped, and their events' ids are None.
        """
        return self._append_many(stream, events, wait, keep_invalid=None)[0]

    def append_checked(
        self, stream: str, events: Iterable[Any], *, dead_letter: bool = True, wait: bool = True
    ) -> tuple[list[str | None], list[tuple[int, ValidationError]]]:
        """``append_many`` for tools that report each bad input: validates each
        event once, never raises for an invalid one (whatever ``strict`` says),
        and returns the ids and the invalid events' (position, error). The
        invalid events are stored as dead letters, or with ``dead_letter=False``
        skipped (their ids are None)."""
        return self._append_many(stream, events, wait, keep_invalid=dead_letter)

    def _append_many(
        self, stream: str, events: Iterable[Any], wait: bool, keep_invalid: bool | None
    ) -> tuple[list[str | None], list[tuple[int, ValidationError]]]:
        """``keep_invalid``: None follows ``strict``; True dead-letters, False skips the invalid."""
        ids, stored, dead, bad, chunks = self._pack(stream, events, keep_invalid)
        if not stored and not dead:
            return ids, bad
        group, admitted = self._enqueue(stored, dead, wait=wait)
        if wait:
            self._wait(group)
        self._unadmitted(ids, chunks, bad if keep_invalid is not False else [], admitted)
        return ids, bad

    def _pack(self, stream: str, events: Iterable[Any], keep_invalid: bool | None = None):
        """Ids, stored rows, dead-letter rows, invalid (position, error) and chunks of ``events``."""
        events = events if isinstance(events, list) else list(events)
        if not events:
            return [], [], [], [], []
        fresh = uuid7_many(len(events))
        ids: list[str | None] = list(fresh)
        coercer = self._coercers.get(stream) if type(stream) is str else None
        chunks: list[Chunk]
        bad: list[tuple[int, ValidationError]]
        if coercer is None:
            error = self._unknown_stream(stream)
            chunks, bad = [], [(pos, error) for pos in range(len(events))]
        else:
            chunks, bad = pack_events(coercer, events, fresh)
        if keep_invalid is None:
            dead = [self._dead_row(stream, events[pos], fresh[pos], exc) for pos, exc in bad]
        else:
            dead = [dead_row(stream, fresh[pos], raw_payload(events[pos]), str(exc)) for pos, exc in bad]
            if not keep_invalid:
                for pos, _ in bad:
                    ids[pos] = None
                dead = []
        now = store.now_us()
        stored = [(stream, c.payload, c.n, c.nbytes, now) for c in chunks]
        return ids, stored, dead, bad, chunks

    @staticmethod
    def _unadmitted(ids: list[str | None], chunks: list[Chunk], bad: list, admitted: list[bool]) -> None:
        """Set the ids of what the size cap dropped to None (``admitted``: rows, then dead letters)."""
        members = [c.members for c in chunks] + [(pos,) for pos, _ in bad]
        for positions, ok in zip(members, admitted):
            if not ok:
                for pos in positions:
                    ids[pos] = None

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything appended so far is committed.

        Raises the commit's error if it failed, and :class:`EventsLostError`
        if any ``wait=False`` events were lost to a failed commit since the
        last flush (once for each loss; ``stats()["process"]["lost"]`` keeps
        the total).
        """
        writer = self._writer
        if writer is None:
            return
        with writer.cond:
            group = writer.group if writer.group else writer.writing
            if group is not None:
                writer.join(group)
        if group is not None:
            if not writer.wait_for(group, timeout):
                raise TimeoutError(f"flush did not finish within {timeout}s")
        with writer.cond:
            lost, error = self._unreported_lost, self._lost_error
            self._unreported_lost, self._lost_error = 0, None
        if lost:
            raise EventsLostError(
                f"{lost} events appended with wait=False to {self.path} were lost: their commit failed ({error})",
                lost=lost,
            ) from error
        if group is not None and group.error is not None:
            raise group.error

    def close(self) -> None:
        """Flush, stop the writer thread and close the file. Idempotent."""
        if self._closed:
            return
        try:
            if self._pid == os.getpid():
                self.flush()
        finally:
            self._closed = True
            registry.discard(self)
            with self._lock:
                if self._writer is not None and self._pid == os.getpid():
                    self._writer.stop()
                self._writer = None
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None
                opening.release(self._in_use)
                self._in_use = None

    def __enter__(self) -> Buffer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
