"""The faults both in-memory fakes inject, as documented settings, and the call wrapper that applies them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from bqspool.schemas.errors import RetryableError

from ..interfaces import JobError
from ..retry import RetryPolicy

T = TypeVar("T")


class TransientFault(RetryableError):
    """A fault a knob injected; the retry policy treats it as any transient error."""


@dataclass
class FaultKnobs:
    """Faults a fake injects into its calls; set the fields at any time.

    ``fail_next``: the next N calls fail transiently (the retry policy
    retries them). ``latency``: seconds each call takes. Lost answers (see
    :meth:`lose_answer`): a call does its work, then fails transiently, as
    when a connection drops before the answer.
    """

    fail_next: int = 0
    latency: float = 0.0
    lost: list[list] = field(default_factory=list)  # [substring of the call, calls to let through first]

    def lose_answer(self, call: str, nth: int = 1) -> None:
        """The ``nth`` call whose description contains ``call`` does its work,
        then fails transiently."""
        self.lost.append([call, nth])


@dataclass
class WarehouseKnobs(FaultKnobs):
    """The warehouse's faults, beside those of :class:`FaultKnobs`.

    ``job_errors``: errors the next jobs finish with, in order
    (``JobError("backend", ...)`` is transient, ``"data"`` is not).
    ``reject_rows``: a function of a row that returns a message to reject
    the whole job with (a data error), or None. ``duplicate_ids``:
    ``"adopt"`` (BigQuery: an existing id is that job) or ``"rerun"`` (the
    emulator: the job runs again). ``running_polls``: a job reads as
    RUNNING for this many lookups.
    """

    job_errors: list[JobError] = field(default_factory=list)
    reject_rows: Callable[[dict], str | None] | None = None
    duplicate_ids: Literal["adopt", "rerun"] = "adopt"
    running_polls: int = 0


class Calls:
    """Runs a fake's calls under the knobs and a retry policy, and counts them."""

    def __init__(self, knobs: FaultKnobs, retry: RetryPolicy | None, sleep: Callable[[float], None]):
        self.knobs = knobs
        self.retry = retry or RetryPolicy(0.001, 0.002, 0.05)
        self.sleep = sleep
        self.counts: Counter = Counter()

    def call(self, what: str, fn: Callable[[], T]) -> T:
        knobs = self.knobs

        def attempt() -> T:
            self.counts[what] += 1
            if knobs.latency:
                self.sleep(knobs.latency)
            if knobs.fail_next > 0:
                knobs.fail_next -= 1
                raise TransientFault(f"{what}: injected transient failure")
            result = fn()
            for rule in knobs.lost:
                if rule[0] in what:
                    rule[1] -= 1
                    if rule[1] == 0:
                        raise TransientFault(f"{what}: done, but its answer was lost")
            return result

        return self.retry.call(what, attempt)
