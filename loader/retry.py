"""Which backend errors are transient, and the retry policy around them.

Retries are tenacity's (exponential backoff with jitter, bounded by a
deadline); the Google clients' own retries are switched off at the call
sites so that one policy, from the configuration, governs every call.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from bqspool.schemas.errors import BackendError, BackendUnavailableError, BqspoolError

log = logging.getLogger("bqspool.loader")
T = TypeVar("T")

# BigQuery reasons (in job errors and 403 bodies) that mean "try again".
TRANSIENT_REASONS = {"backendError", "rateLimitExceeded", "internalError", "jobBackendError",
                     "jobInternalError", "quotaExceeded", "tableUnavailable"}
_TRANSIENT_HTTP = (gexc.TooManyRequests, gexc.InternalServerError, gexc.BadGateway, gexc.ServiceUnavailable,
                   gexc.GatewayTimeout, gexc.DeadlineExceeded)


def is_transient(exc: BaseException) -> bool:
    """True for errors a later attempt of the same call may not get."""
    if isinstance(exc, BqspoolError):
        return exc.retryable
    if isinstance(exc, _TRANSIENT_HTTP):
        return True
    if isinstance(exc, gexc.GoogleAPICallError):
        reasons = {e.get("reason") for e in (exc.errors or []) if isinstance(e, dict)}
        return bool(reasons & TRANSIENT_REASONS)
    return isinstance(exc, (requests.ConnectionError, requests.Timeout, auth_exc.TransportError,
                            ConnectionError, TimeoutError))


def translate(exc: BaseException, what: str) -> BqspoolError:
    """A backend exception as a member of our tree (call with ``raise ... from exc``)."""
    if isinstance(exc, BqspoolError):
        return exc
    if is_transient(exc):
        return BackendUnavailableError(f"{what}: backend unavailable after retries: {exc}")
    return BackendError(f"{what}: {exc}")


class RetryPolicy:
    """Exponential backoff with jitter from ``initial`` to ``maximum`` seconds,
    giving up after ``deadline`` seconds."""

    def __init__(self, initial: float = 1.0, maximum: float = 60.0, deadline: float = 300.0):
        self.initial, self.maximum, self.deadline = initial, maximum, deadline

    def call(self, what: str, fn: Callable[[], T]) -> T:
        def before_sleep(state) -> None:
            log.warning("%s failed (attempt %d): %s; retrying in %.1fs", what, state.attempt_number,
                        state.outcome.exception(), state.next_action.sleep)

        retrying = Retrying(
            stop=stop_after_delay(self.deadline),
            # Full jitter: a random wait up to an exponentially growing cap.
            wait=wait_random_exponential(multiplier=self.initial, max=self.maximum),
            retry=retry_if_exception(is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(fn)
        except Exception as exc:
            raise translate(exc, what) from exc
