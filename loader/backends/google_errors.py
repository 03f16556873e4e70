"""Which Google client errors are transient: the Google adapters' half of the retry policy."""

from __future__ import annotations

import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

# BigQuery reasons (in job errors and 403 bodies) that mean "try again".
TRANSIENT_REASONS = {
    "backendError",
    "rateLimitExceeded",
    "internalError",
    "jobBackendError",
    "jobInternalError",
    "quotaExceeded",
    "tableUnavailable",
}
_TRANSIENT_HTTP = (
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
    gexc.DeadlineExceeded,
)


def is_transient(exc: BaseException) -> bool | None:
    """True for errors a later attempt of the same call may not get; None for errors not Google's."""
    if isinstance(exc, _TRANSIENT_HTTP):
        return True
    if isinstance(exc, gexc.GoogleAPICallError):
        reasons = {e.get("reason") for e in (exc.errors or []) if isinstance(e, dict)}
        return bool(reasons & TRANSIENT_REASONS)
    if isinstance(
        exc,
        (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError, auth_exc.TransportError),
    ):
        return True
    return None
