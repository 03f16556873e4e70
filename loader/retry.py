"""The retry policy: exponential backoff with jitter around transient failures.

Retries are tenacity's, bounded by a deadline. What counts as transient is
passed in: bqspool's own retryable errors and the standard library's
connection errors always do, and each backend adapter adds its own
classification (see :mod:`.google_errors`), so this module knows no SDK.
Failures are translated into bqspool's error tree on the way out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from bqspool.schemas.errors import BackendError, BackendUnavailableError, BqspoolError
from tenacity import Retrying, retry_if_exception, stop_after_delay, stop_any, wait_random_exponential
from tenacity.stop import stop_base

log = logging.getLogger("bqspool.loader")
T = TypeVar("T")
Classifier = Callable[[BaseException], "bool | None"]


def _builtin_transient(exc: BaseException) -> bool | None:
    if isinstance(exc, BqspoolError):
        return exc.retryable
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return None


def _kind(exc: BaseException) -> str:
    """A transient error in a few words: its class, and an HTTP status where it has one."""
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__} {code}" if isinstance(code, int) else type(exc).__name__


class _StopWhen(stop_base):
    """Stop retrying once ``should_stop()`` says so (a process told to go)."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, retry_state: object) -> bool:
        return self.should_stop()


class RetryPolicy:
    """Exponential backoff with jitter from ``initial`` to ``maximum`` seconds,
    giving up after ``deadline`` seconds.

    ``classify`` tells a backend's transient errors (True), permanent ones
    (False) or neither (None, meaning permanent).
    """

    def __init__(
        self, initial: float = 1.0, maximum: float = 60.0, deadline: float = 300.0, classify: Classifier | None = None
    ):
        self.initial, self.maximum, self.deadline = initial, maximum, deadline
        self.classify = classify

    def is_transient(self, exc: BaseException) -> bool:
        for judge in (_builtin_transient, self.classify):
            if judge is not None:
                verdict = judge(exc)
                if verdict is not None:
                    return verdict
        return False

    def translate(self, exc: BaseException, what: str) -> BqspoolError:
        """A failure as a member of our tree (raise it ``from exc``)."""
        if isinstance(exc, BqspoolError):
            return exc
        if self.is_transient(exc):
            # The error itself names the whole request URL and the connection's
            # innards: at debug level only; the message says what and which kind.
            log.debug("%s: the last error: %s", what, exc)
            return BackendUnavailableError(f"{what}: backend unavailable after retries ({_kind(exc)})")
        return BackendError(f"{what}: {exc}")

    def call(self, what: str, fn: Callable[[], T], should_stop: Callable[[], bool] | None = None) -> T:
        """``fn()`` until it succeeds, fails for good, the deadline passes or
        ``should_stop()`` says so; failures come out as bqspool's errors."""
        # One warning when a retry sequence starts, one line when it ends;
        # each failure in between at debug level.
        attempts = [0]

        def before_sleep(state) -> None:
            attempts[0] = state.attempt_number
            exc = state.outcome.exception()
            if state.attempt_number == 1:
                log.warning("%s failed (%s); retrying for up to %.0fs", what, type(exc).__name__, self.deadline)
            log.debug(
                "%s attempt %d failed: %s; next in %.1fs", what, state.attempt_number, exc, state.next_action.sleep
            )

        stop: stop_base = stop_after_delay(self.deadline)
        if should_stop is not None:
            stop = stop_any(stop, _StopWhen(should_stop))
        retrying = Retrying(
            stop=stop,
            # Full jitter: a random wait up to an exponentially growing cap.
            wait=wait_random_exponential(multiplier=self.initial, max=self.maximum),
            retry=retry_if_exception(self.is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            result = retrying(fn)
        except Exception as exc:
            if attempts[0]:
                log.warning("%s gave up after %d attempts: %s", what, attempts[0] + 1, type(exc).__name__)
            raise self.translate(exc, what) from exc
        if attempts[0]:
            log.warning("%s succeeded after %d attempts", what, attempts[0] + 1)
        return result
