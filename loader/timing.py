"""Where a report's time went, step by step."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class StepTimes:
    """A report's ``step_seconds`` (a field of the report itself): seconds by step."""

    step_seconds: dict[str, float]

    def add_time(self, step: str, seconds: float) -> None:
        self.step_seconds[step] = round(self.step_seconds.get(step, 0.0) + seconds, 4)

    @contextlib.contextmanager
    def timing(self, step: str) -> Iterator[None]:
        """Add the time the block takes to ``step_seconds[step]``."""
        t = time.monotonic()
        try:
            yield
        finally:
            self.add_time(step, time.monotonic() - t)
