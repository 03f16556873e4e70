"""Progress of a long step, for operators: a bar on a terminal, log lines elsewhere.

One helper for every step that can take more than a few seconds: the
ship's staging, the commit's load jobs and archiving, restore's copies and
loads, verify's audit queries. On a terminal it draws a tqdm bar on
stderr; elsewhere (cron, systemd, a container's log) it logs a line at
most every ``every_s`` seconds, so a long step is never a silent wait.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

log = logging.getLogger("bqspool.loader")
T = TypeVar("T")


class Progress:
    """``what`` advancing through ``total`` ``unit`` (None: a count with no end known)."""

    def __init__(
        self,
        total: int | None,
        enabled: bool = True,
        *,
        what: str = "shipping",
        unit: str = "events",
        every_s: float = 5.0,
    ):
        self.total, self.done, self.what, self.unit = total, 0, what, unit
        self.start = self.last = time.monotonic()
        self.every_s = every_s
        self.bar: Any = None
        self.enabled = enabled and total != 0
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=f" {unit}", desc=what, unit_scale=True, leave=False)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            rate = self.done / max(self.last - self.start, 1e-9)
            of = f" of {self.total:,}" if self.total is not None else ""
            log.info("%s: %s%s %s (%s/s)", self.what, f"{self.done:,}", of, self.unit, f"{rate:,.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tracked(items: Iterable[T], total: int | None, enabled: bool, *, what: str, unit: str) -> Iterator[T]:
    """``items``, advancing a :class:`Progress` by one per item."""
    with Progress(total, enabled, what=what, unit=unit) as progress:
        for item in items:
            yield item
            progress.advance()
