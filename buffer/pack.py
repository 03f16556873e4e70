"""Validating one stream's events and packing them into stored ``events`` rows.

A stored row holds up to ``CHUNK_EVENTS`` events as JSON lines joined by
"\\n", at most ``CHUNK_BYTES`` of them (one larger event gets a row of its
own). ``append_many`` validates, encodes and stores through here: a row's
fixed cost (its b-tree and index entries, paid at append and again when
the loader deletes it) is larger than what a small event's bytes cost, so
few large rows store a batch at close to the speed of writing its bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from bqspool.schemas.coerce import Coercer
from bqspool.schemas.errors import ValidationError

CHUNK_EVENTS = 1000
CHUNK_BYTES = 1024 * 1024


class Chunk(NamedTuple):
    payload: str  # the events' JSON lines joined by "\n"
    n: int  # how many events
    nbytes: int  # UTF-8 bytes of payload
    members: Sequence[int]  # their positions in the events given to pack_events()


def pack_events(
    coercer: Coercer, events: list, ids: list[str]
) -> tuple[list[Chunk], list[tuple[int, ValidationError]]]:
    """Validate and encode ``events`` (with their ``ids``) into chunks, in order.

    Returns the chunks and the events that cannot be stored, as (position,
    error) in position order: invalid events and rows over the table's row
    size limit. Those must become dead letters (or raise, in strict mode).
    """
    chunks: list[Chunk] = []
    bad: list[tuple[int, ValidationError]] = []
    if len(events) == 1:  # a lone event: encoding it alone costs half the fast path's two calls
        _pack_one_by_one(coercer, events, ids, 0, chunks, bad)
        return chunks, bad
    limit = min(CHUNK_BYTES, coercer.max_row_bytes)
    for lo in range(0, len(events), CHUNK_EVENTS):
        part = events[lo : lo + CHUNK_EVENTS]
        part_ids = ids[lo : lo + CHUNK_EVENTS]
        # Fast path: the whole slice checked and encoded in two msgspec
        # calls. The slice's size bounds every row in it, so no row can be
        # over the limit when the slice is not.
        data = coercer.fast_lines(part, part_ids)
        if data is not None and len(data) - 1 <= limit:
            payload = str(memoryview(data)[:-1], "utf-8")  # without the last newline
            chunks.append(Chunk(payload, len(part), len(data) - 1, range(lo, lo + len(part))))
        else:
            _pack_one_by_one(coercer, part, part_ids, lo, chunks, bad)
    return chunks, bad


def _pack_one_by_one(
    coercer: Coercer,
    part: list,
    part_ids: list[str],
    offset: int,
    chunks: list[Chunk],
    bad: list[tuple[int, ValidationError]],
) -> None:
    """A slice with an event the fast path left: each event on its own, the invalid ones to ``bad``."""
    texts: list[bytes] = []
    members: list[int] = []
    size = 0

    def close() -> None:
        chunks.append(Chunk(b"\n".join(texts).decode("utf-8"), len(texts), size, list(members)))
        texts.clear()
        members.clear()

    for i, (event, event_id) in enumerate(zip(part, part_ids), offset):
        try:
            data = coercer.encode(event, event_id)  # invalid or over max_row_bytes: ValidationError
        except ValidationError as exc:
            bad.append((i, exc))
            continue
        nbytes = len(data)
        if texts and size + 1 + nbytes > CHUNK_BYTES:
            close()
            size = 0
        size += nbytes + (1 if texts else 0)
        texts.append(data)
        members.append(i)
    if texts:
        close()
