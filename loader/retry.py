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
from typing import Any, TypeVar

from bqspool.schemas.errors import BackendError, BackendUnavailableError, BqspoolError
from tenacity import Retrying, retry_if_exception, stop_after_delay, stop_any, wait_random_exponential
from tenacity.stop import stop_base

log = logging.getLogger("bqspool.loader")
T = TypeVar("T")
Classifier = Callable[[BaseException], "bool | None"]
# A backend's reading of an error a user can fix (a missing bucket, dataset,
# credentials): the one-line error that says what to do, or None.
Explainer = Callable[[BaseException], "BqspoolError | None"]


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


def _short(what: str) -> str:
    """``what`` with each long ``gs://`` name cut to its bucket and first folders:
    warnings say what failed, not the 120-character name of the object (the whole
    name stays at debug level). Only failures pay for it."""
    words = []
    for word in what.split(" "):
        if word.startswith("gs://") and len(word) > 60:
            word = "/".join(word.split("/")[:6]) + "/…"
        words.append(word)
    return " ".join(words)


def _where(exc: BaseException) -> str:
    """``, cannot reach HOST`` when ``exc`` is a connection that failed, with a hint for
    the local stack (an endpoint on this machine); "" otherwise."""
    from urllib.parse import urlsplit

    request = getattr(exc, "request", None)
    url = getattr(request, "url", None)
    if not isinstance(url, str) or not isinstance(exc, OSError):  # requests' errors are OSErrors
        return ""
    host = urlsplit(url).netloc
    local = host.split(":")[0] in ("127.0.0.1", "localhost", "::1")
    hint = " (the local stack: is it running? `bqspool local up`)" if local else ""
    return f", cannot reach {host}{hint}"


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
        self,
        initial: float = 1.0,
        maximum: float = 60.0,
        deadline: float = 300.0,
        classify: Classifier | None = None,
        explain: Explainer | None = None,
    ):
        self.initial, self.maximum, self.deadline = initial, maximum, deadline
        self.classify, self.explain = classify, explain

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
        explained = self.explain(exc) if self.explain is not None else None
        if explained is not None:
            log.debug("%s: %s", what, exc)  # the server's own words, for whoever debugs
            return explained
        if self.is_transient(exc):
            # The error itself names the whole request URL and the connection's
            # innards: at debug level only; the message says what and which kind.
            log.debug("%s: the last error: %s", what, exc)
            return BackendUnavailableError(f"{_short(what)}: backend unavailable after retries ({_kind(exc)})")
        return BackendError(f"{what}: {exc}")

    def _wait(self) -> Callable[[Any], float]:
        """Full jitter (a random wait up to an exponentially growing cap), never past
        the deadline: the last wait is what is left of it, so giving up is on time."""
        jitter = wait_random_exponential(multiplier=self.initial, max=self.maximum)

        def wait(state: Any) -> float:
            left = self.deadline - (state.seconds_since_start or 0.0)
            return max(0.0, min(jitter(state), left))

        return wait

    def call(self, what: str, fn: Callable[[], T], should_stop: Callable[[], bool] | None = None) -> T:
        """``fn()`` until it succeeds, fails for good, the deadline passes or
        ``should_stop()`` says so; failures come out as bqspool's errors."""
        # One warning when a retry sequence starts, one line when it ends;
        # each failure in between at debug level.
        attempts = [0]

        def before_sleep(state) -> None:
            attempts[0] = state.attempt_number
            exc = state.outcome.exception()
            wait = state.next_action.sleep
            if state.attempt_number == 1:
                log.warning(
                    "%s failed (%s%s); retrying for up to %.0fs", _short(what), _kind(exc), _where(exc), self.deadline
                )
            elif wait >= 1.0:  # the operator hears of every backoff step worth waiting for
                log.warning(
                    "%s still failing after %d attempts (%s); next attempt in %.0fs",
                    _short(what),
                    state.attempt_number,
                    _kind(exc),
                    wait,
                )
            log.debug("%s attempt %d failed: %s; next in %.1fs", what, state.attempt_number, exc, wait)

        stop: stop_base = stop_after_delay(self.deadline)
        if should_stop is not None:
            stop = stop_any(stop, _StopWhen(should_stop))
        retrying = Retrying(
            stop=stop,
            # Full jitter: a random wait up to an exponentially growing cap.
            wait=self._wait(),
            retry=retry_if_exception(self.is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            result = retrying(fn)
        except Exception as exc:
            if attempts[0]:
                log.warning("%s gave up after %d attempts: %s", _short(what), attempts[0] + 1, type(exc).__name__)
            raise self.translate(exc, what) from exc
        if attempts[0]:
            log.warning("%s succeeded after %d attempts", _short(what), attempts[0] + 1)
        return result
