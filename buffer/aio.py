"""Appending from asyncio: one event loop iteration's appends validated, packed and queued together.

``append_async`` and ``append_many_async`` never block the loop: the calls
one iteration makes join one batch, which is queued for the writer by a
single ``call_soon`` at the iteration's end, and their futures resolve
together when the group commits. Mixed into :class:`~.core.Buffer`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bqspool.schemas.errors import BufferFullError

if TYPE_CHECKING:
    from pathlib import Path


class AsyncBatch:
    """One event loop iteration's async appends: per stream, the events and their futures."""

    __slots__ = ("streams",)

    def __init__(self) -> None:
        # Per stream: the stream, its events and their futures, in two
        # parallel lists (packing wants the events as a list). A stream that
        # is not a str (an error: it becomes dead letters) is keyed by
        # identity, so even an unhashable one is kept apart.
        self.streams: dict[Any, tuple[Any, list, list[asyncio.Future]]] = {}

    def add(self, stream: Any, events: list, futs: list[asyncio.Future]) -> None:
        key = stream if type(stream) is str else ("", id(stream))
        entry = self.streams.get(key)
        if entry is None:
            self.streams[key] = (stream, list(events), list(futs))
        else:
            entry[1].extend(events)
            entry[2].extend(futs)

    def add_one(self, stream: Any, event: Any, fut: asyncio.Future) -> None:
        key = stream if type(stream) is str else ("", id(stream))
        entry = self.streams.get(key)
        if entry is None:
            self.streams[key] = (stream, [event], [fut])
        else:
            entry[1].append(event)
            entry[2].append(fut)


def _fail_all(futs: list[asyncio.Future], exc: BaseException) -> None:
    for fut in futs:
        if not fut.done():
            fut.set_exception(exc)


class AsyncAppendMixin:
    """The asyncio half of :class:`~.core.Buffer` (which provides what is declared here)."""

    path: Path
    on_full: str
    strict: bool
    block_timeout: float
    max_bytes: int | None
    _disk_bytes: int
    _async_batches: dict[asyncio.AbstractEventLoop, AsyncBatch]

    if TYPE_CHECKING:  # provided by Buffer and its AdmissionMixin

        def _read_used_bytes(self) -> int: ...
        def _pack(self, stream: str, events: Iterable[Any], keep_invalid: bool | None = None) -> Any: ...
        def _enqueue(
            self, rows: list[tuple], dead: list[tuple], *, wait: bool, future: Any = None, may_block: bool = True
        ) -> tuple[Any, list[bool]]: ...

    async def append_async(self, stream: str, event: Any) -> str | None:
        """``append`` for asyncio: awaits the commit without blocking the loop.

        The calls an event loop makes in one iteration are validated, packed
        and queued together, as ``append_many`` would (one hand-off to the
        writer, ids and checks in bulk), and their futures are resolved
        together when the group commits. Under ``strict=True`` an invalid
        event raises ``ValidationError`` in its own call only.
        """
        # The common call, inline: one future, no inner coroutine, no lists
        # (at a thousand concurrent tasks these were a tenth of its cost).
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        batch = self._async_batches.get(loop)
        if batch is None:
            batch = self._async_batch(loop)
        batch.add_one(stream, event, fut)
        try:
            return await fut
        except BufferFullError:
            if self.on_full != "block":
                raise
        (event_id,) = await self._await_async(stream, [event], full=True)
        return event_id

    async def append_many_async(self, stream: str, events: Iterable[Any]) -> list[str | None]:
        """``append_many`` for asyncio: the events join the loop's batch and their
        ids come back in input order once committed (None where the cap dropped one)."""
        events = events if isinstance(events, list) else list(events)
        return await self._await_async(stream, events) if events else []

    async def _await_async(self, stream: str, events: list, full: bool = False) -> list[str | None]:
        """Queue ``events`` and await their commit; ``full``: a first try already found the buffer full."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.block_timeout
        while True:
            if full:
                # "block" must never block the loop: wait here, polling the
                # committed size, and try again until block_timeout.
                if loop.time() >= deadline:
                    raise BufferFullError(
                        f"buffer {self.path} stayed full ({self.max_bytes} bytes cap) for {self.block_timeout}s; "
                        "is the loader running?"
                    )
                await asyncio.sleep(0.1)
                self._disk_bytes = await asyncio.to_thread(self._read_used_bytes)
            futs = [loop.create_future() for _ in events]
            self._async_batch(loop).add(stream, events, futs)
            try:
                if len(futs) == 1:  # the common call: gather() would cost more than the append
                    return [await futs[0]]
                return list(await asyncio.gather(*futs))
            except BufferFullError:
                if self.on_full != "block" or loop.time() >= deadline:
                    raise
                full = True

    def _async_batch(self, loop: asyncio.AbstractEventLoop) -> AsyncBatch:
        """This loop's async appends of the current iteration, queued by one call_soon at its end."""
        batch = self._async_batches.get(loop)
        if batch is None:
            batch = self._async_batches[loop] = AsyncBatch()
            loop.call_soon(self._enqueue_async, loop)
        return batch

    def _enqueue_async(self, loop: asyncio.AbstractEventLoop) -> None:
        """Validate, pack and queue one loop iteration's events; runs on the loop's thread."""
        batch = self._async_batches.pop(loop)
        rows: list[tuple] = []
        dead: list[tuple] = []
        waiting: list[list[tuple[asyncio.Future, str | None]]] = []  # per row, then per dead letter
        waiting_dead: list[list[tuple[asyncio.Future, str | None]]] = []
        keep = False if self.strict else None
        for stream, events, futs in batch.streams.values():
            # keep=False: invalid events are left out and reported, never raised for the batch.
            ids, stored, dead_rows, bad, chunks = self._pack(stream, events, keep)
            if keep is False:  # strict: each invalid event fails its own call
                for pos, error in bad:
                    if not futs[pos].done():
                        futs[pos].set_exception(error)
            rows += stored
            waiting += [[(futs[p], ids[p]) for p in c.members] for c in chunks]
            dead += dead_rows
            if keep is None:
                waiting_dead += [[(futs[pos], ids[pos])] for pos, _ in bad]
        if not rows and not dead:
            return
        targets = waiting + waiting_dead
        try:
            _, admitted = self._enqueue(rows, dead, wait=False, future=(loop, targets), may_block=False)
        except BaseException as exc:
            _fail_all([f for t in targets for f, _ in t], exc)
            return
        for target, ok in zip(targets, admitted):
            if not ok:
                for fut, _ in target:  # dropped by the size cap: now, not at the commit
                    if not fut.done():
                        fut.set_result(None)
