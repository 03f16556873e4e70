"""Progress of a long drain, and the process's peak memory, for operators."""

from __future__ import annotations

import logging
import resource
import sys
import time

log = logging.getLogger("bqspool.loader")


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    VmHWM where /proc has it: ru_maxrss survives exec, so a loader started
    from a big parent process would report the parent's size.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


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
