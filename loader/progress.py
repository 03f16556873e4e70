"""Progress of a long step, for operators: a bar on a terminal, log lines elsewhere."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("bqspool.loader")


class Progress:
    """A progress bar on a terminal, periodic log lines elsewhere."""

    def __init__(self, total: int, enabled: bool = True, every_s: float = 5.0):
        self.total, self.done = total, 0
        self.start = self.last = time.monotonic()
        self.every_s = every_s
        self.bar = None
        if enabled and total and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="ev", desc="draining", unit_scale=True, leave=False)
        self.enabled = enabled and total > 0

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            rate = self.done / max(self.last - self.start, 1e-9)
            log.info("drained %d of %d events (%.0f/s)", self.done, self.total, rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
