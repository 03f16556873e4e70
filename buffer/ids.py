"""Event ids: UUIDv7 (RFC 9562), time-ordered and unique.

48 bits of Unix milliseconds, then a 12-bit counter that keeps ids from one
process strictly increasing within a millisecond (RFC 9562, method 1), then
62 random bits that keep ids from different processes apart.
"""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0
# Random bits for uuid7(), drawn from the OS in bulk: one os.urandom call
# per id was most of an id's cost (a system call, 1-6 us on these machines).
_POOL_IDS = 256
_pool = b""
_pool_at = 0


def _reset_after_fork() -> None:
    # A child must never reuse the parent's unused random bits: with the
    # same millisecond and counter they would make the same id.
    global _lock, _pool, _pool_at
    _lock = threading.Lock()
    _pool, _pool_at = b"", 0


os.register_at_fork(after_in_child=_reset_after_fork)


def uuid7() -> str:
    """A new UUIDv7 as a 36-character lowercase string."""
    global _last_ms, _counter, _pool, _pool_at
    ms = time.time_ns() // 1_000_000
    with _lock:
        if _pool_at >= len(_pool):
            _pool, _pool_at = os.urandom(8 * _POOL_IDS), 0
        rand = int.from_bytes(_pool[_pool_at : _pool_at + 8], "big") & 0x3FFF_FFFF_FFFF_FFFF
        _pool_at += 8
        if ms > _last_ms:
            _last_ms, _counter = ms, 0
        else:
            # Same (or an earlier, after a clock step) millisecond: count on,
            # borrowing the next millisecond when the counter runs out.
            _counter += 1
            if _counter > 0xFFF:
                _last_ms, _counter = _last_ms + 1, 0
        ms, counter = _last_ms, _counter
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_COUNTER_HEX = [f"{c:03x}" for c in range(4096)]
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))  # top bits 10: RFC 9562 variant
_WIDTH = 37  # an id and the newline that separates it from the next
# Below this many ids the columns cost more than they save (a system call
# for the random bits and 24 slice assignments: 30 us for one id, against
# 3 us through uuid7()'s pool). An asyncio task's lone append is one id.
_FEW = 8


def uuid7_many(n: int) -> list[str]:
    """``n`` new UUIDv7 strings, increasing; about a tenth of ``n`` calls' cost.

    Reserves ``n`` counter values at once, spilling into following
    milliseconds when a millisecond's 4,096 run out, then formats each
    millisecond's run in bulk (see ``_format_run``).
    """
    global _last_ms, _counter
    if n <= 0:
        return []
    if n < _FEW:
        return [uuid7() for _ in range(n)]
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms > _last_ms:
            _last_ms, _counter = ms, -1
        ms, counter = _last_ms, _counter + 1
        end = counter + n - 1
        _last_ms, _counter = ms + (end >> 12), end & 0xFFF
    out: list[str] = []
    while n:
        k = min(n, 4096 - counter)
        out += _format_run(ms, counter, k)
        n -= k
        ms, counter = ms + 1, 0
    return out


def _format_run(ms: int, counter: int, k: int) -> list[str]:
    """The ids of millisecond ``ms`` with counters ``counter`` to ``counter + k - 1``.

    Formatting one id at a time costs more than everything else about it, so
    the ids are laid out as columns: one buffer of ``k`` lines, each
    character position filled for every line by one strided slice
    assignment in C, then split into strings.
    """
    rand = bytearray(os.urandom(8 * k))
    rand[0::8] = rand[0::8].translate(_VARIANT)
    rand_hex = rand.hex().encode("ascii")  # 16 hex digits per id
    head = f"{ms:012x}"
    prefix = f"{head[:8]}-{head[8:]}-7".encode("ascii")  # time and version, the same on every line
    counters = "".join(_COUNTER_HEX[counter : counter + k]).encode("ascii")
    lines = bytearray(b"\n" * (_WIDTH * k))
    for pos, char in enumerate(prefix):  # characters 0-14
        lines[pos::_WIDTH] = bytes((char,)) * k
    for pos in range(3):  # 15-17: the counter
        lines[15 + pos :: _WIDTH] = counters[pos::3]
    lines[18::_WIDTH] = lines[23::_WIDTH] = b"-" * k
    for pos in range(16):  # 19-22 and 24-35: the random bits, the variant in the first
        lines[19 + pos + (pos >= 4) :: _WIDTH] = rand_hex[pos::16]
    return lines[:-1].decode("ascii").split("\n")


def uuid7_millis(event_id: str) -> int:
    """The Unix milliseconds embedded in a UUIDv7 string."""
    return int(event_id[:8] + event_id[9:13], 16)
