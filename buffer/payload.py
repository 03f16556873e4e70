"""Dead-letter payloads of invalid events, and the rate-limited warnings about them."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from bqspool.schemas.display import safe_text, show

from .rows import MAX_DEAD_PAYLOAD

log = logging.getLogger("bqspool.buffer")


def raw_payload(event: Any) -> str:
    """The event as faithfully as text allows, for a dead-letter row.

    JSON where the event is JSON-like and small enough, so that a replay
    can read it back. An event over ``MAX_DEAD_PAYLOAD`` is clipped first
    (long strings, long lists, deep nesting), which bounds the cost of
    writing it, and is marked ``[clipped]``: such text is not JSON, so a
    replay refuses it rather than store a shortened event.
    """
    clipped = _Clip()
    value = clipped(event, 0)
    try:
        # ensure_ascii turns lone surrogates into escapes SQLite can store.
        text = json.dumps(value, ensure_ascii=True, default=show)
    except (ValueError, TypeError, RecursionError):
        text = show(event, 1000)
    if clipped.cut:
        text = "[clipped] " + text
    return safe_text(text, MAX_DEAD_PAYLOAD)


class _Clip:
    """A copy of a JSON-like value cut down to a bounded size; ``cut`` says whether anything was."""

    STRING, ITEMS, DEPTH = 65_536, 10_000, 64

    def __init__(self) -> None:
        self.cut = False
        self.budget = MAX_DEAD_PAYLOAD

    def __call__(self, v: Any, depth: int) -> Any:
        t = type(v)
        if t is str:
            n = min(len(v), self.STRING, max(self.budget, 0))
            self.budget -= n
            if n < len(v):
                self.cut = True
                return v[:n]
            return v
        if t in (int, float, bool) or v is None:
            self.budget -= 8
            return v if t is not int or v.bit_length() < 200 else show(v)
        if depth >= self.DEPTH or self.budget <= 0:
            self.cut = True
            return "..."
        try:
            if t is dict:
                items = list(v.items())
                if len(items) > self.ITEMS:
                    self.cut, items = True, items[: self.ITEMS]
                return {(k if type(k) is str else show(k)): self(x, depth + 1) for k, x in items}
            if t in (list, tuple):
                if len(v) > self.ITEMS:
                    self.cut, v = True, v[: self.ITEMS]
                return [self(x, depth + 1) for x in v]
        except Exception:  # a container of the caller's that fails to iterate
            pass
        return show(v)


class RateLimitedLog:
    """Logs an event kind at most once per ``every`` seconds, with a count."""

    def __init__(self, level: int, every: float = 5.0):
        self.level, self.every = level, every
        self.last = 0.0
        self.suppressed = 0

    def __call__(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            self.suppressed += 1
            return
        extra = f" ({self.suppressed} more since the last report)" if self.suppressed else ""
        self.last, self.suppressed = now, 0
        log.log(self.level, msg + extra, *args)
