"""Packing one stream's validated rows into stored ``events`` rows.

A stored row holds up to ``CHUNK_EVENTS`` events as JSON lines joined by
"\\n", at most ``CHUNK_BYTES`` of them (one larger event gets a row of its
own). ``append_many`` stores through here: a row's fixed cost (its b-tree
and index entries, paid at append and again when the loader deletes it)
is larger than what a small event's bytes cost, so few large rows store a
batch at close to the speed of writing its bytes.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from bqspool.schemas.coerce import Coercer
from bqspool.schemas.errors import ValidationError

CHUNK_EVENTS = 1000
CHUNK_BYTES = 1024 * 1024


class Chunk(NamedTuple):
    payload: str  # the events' JSON lines joined by "\n"
    n: int  # how many events
    nbytes: int  # UTF-8 bytes of payload
    members: Sequence[int]  # their positions in the rows given to pack()


def pack(coercer: Coercer, rows: list[bytes]) -> tuple[list[Chunk], list[tuple[int, ValidationError]]]:
    """Join encoded rows (from ``coercer.fast``/``encode_full``) into chunks, in order.

    Returns the chunks and the rows that are over the table's row size
    limit, as (position, error): those must become dead letters.
    """
    chunks: list[Chunk] = []
    too_big: list[tuple[int, ValidationError]] = []
    # Fast path: a whole slice joined at once. Its size bounds every row in
    # it, so no row can be over the limit when the slice is not.
    limit = min(CHUNK_BYTES, coercer.max_row_bytes)
    for lo in range(0, len(rows), CHUNK_EVENTS):
        part = rows[lo : lo + CHUNK_EVENTS]
        data = b"\n".join(part)
        if len(data) <= limit:
            chunks.append(Chunk(data.decode("utf-8"), len(part), len(data), range(lo, lo + len(part))))
        else:
            _pack_one_by_one(coercer, part, lo, chunks, too_big)
    return chunks, too_big


def _pack_one_by_one(
    coercer: Coercer, part: list[bytes], offset: int, chunks: list[Chunk], too_big: list[tuple[int, ValidationError]]
) -> None:
    texts: list[bytes] = []
    members: list[int] = []
    size = 0

    def close() -> None:
        chunks.append(Chunk(b"\n".join(texts).decode("utf-8"), len(texts), size, list(members)))
        texts.clear()
        members.clear()

    for i, data in enumerate(part, offset):
        nbytes = len(data)
        if nbytes > coercer.max_row_bytes:
            too_big.append((i, coercer.too_big(nbytes)))
            continue
        if texts and size + 1 + nbytes > CHUNK_BYTES:
            close()
            size = 0
        size += nbytes + (1 if texts else 0)
        texts.append(data)
        members.append(i)
    if texts:
        close()
