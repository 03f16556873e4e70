"""Which Google client errors are transient: the Google adapters' half of the retry policy."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import requests
from bqspool.schemas.errors import BqspoolError, ConfigError
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


NO_CREDENTIALS = (
    "no Google credentials found: run `gcloud auth application-default login` (on GCP, give the VM or "
    'workload a service account); for the local stack, `eval "$(bqspool local up)"`'
)
_BUCKET_PATH = re.compile(r"/b/([^/?]+)(?:/o)?/?$")  # a bucket, a listing or an upload: 404 only without the bucket
_DATASET = re.compile(r"Not found: Dataset ([\w.:-]+)")
_TABLE = re.compile(r"Not found: Table ([\w.:-]+)")
_LOCATION = re.compile(r"was not found in location (\w[\w-]*)")


def explain(exc: BaseException) -> BqspoolError | None:
    """An error a user can fix, as one line that says how; None for the rest (see RetryPolicy)."""
    if isinstance(exc, auth_exc.DefaultCredentialsError):
        return ConfigError(NO_CREDENTIALS)
    if isinstance(exc, auth_exc.RefreshError):
        return ConfigError(
            f"Google credentials could not be refreshed ({exc.args[0] if exc.args else exc}): {NO_CREDENTIALS}"
        )
    if isinstance(exc, gexc.GoogleAPICallError) and not isinstance(exc, gexc.NotFound):
        return _denial(exc)
    if not isinstance(exc, gexc.NotFound):
        return None
    text = str(exc)
    url = getattr(getattr(getattr(exc, "response", None), "request", None), "url", "") or ""
    path = urlsplit(url).path
    found = _BUCKET_PATH.search(path) if "/storage/v1/" in path else None
    if found:
        return ConfigError(f"bucket {unquote(found.group(1))} does not exist (create it, or set bucket)")
    if m := _DATASET.search(text):
        name = m.group(1).replace(":", ".")
        # BigQuery cannot tell a missing dataset from one in another location: say both.
        where = _LOCATION.search(text)
        place = f" in location {where.group(1)}" if where else ""
        also = " and location to the dataset's" if where else ""
        return ConfigError(f"dataset {name} does not exist{place} (run `bqspool setup`, or set dataset{also})")
    if m := _TABLE.search(text):
        return ConfigError(f"table {m.group(1).replace(':', '.')} does not exist (run `bqspool setup`)")
    return None


_VPC_SC = re.compile(r"vpcServiceControlsUniqueIdentifier:?\s*([\w-]+)")
_DISABLED = re.compile(r"(.+?) API has not been used in project ([\w-]+) before or it is disabled")
_CONSTRAINT = re.compile(r"[Cc]onstraint (constraints/[\w.]+)")


def _denial(exc: gexc.GoogleAPICallError) -> BqspoolError | None:
    """A refusal that no retry and no IAM role of ours fixes, named with its fix: a VPC
    Service Controls perimeter, a disabled API, disabled billing, an organization policy."""
    text = str(exc)
    reasons = {e.get("reason") for e in (exc.errors or []) if isinstance(e, dict)}
    if m := _VPC_SC.search(text):
        return ConfigError(
            "VPC Service Controls refused the request (a service perimeter guards the project): run inside the "
            f"perimeter, or have this identity or network added to its access level (identifier {m.group(1)})"
        )
    if (m := _DISABLED.search(text)) or reasons & {"accessNotConfigured", "SERVICE_DISABLED"}:
        api, project = (m.group(1).strip(), m.group(2)) if m else ("the API", "this project")
        service = "bigquery.googleapis.com" if "BigQuery" in api else "storage.googleapis.com"
        return ConfigError(f"{api} is disabled in project {project}: gcloud services enable {service}")
    if reasons & {"billingNotEnabled", "accountDisabled"} or re.search(
        r"[Bb]illing (has not been enabled|account .*disabled)", text
    ):
        return ConfigError("billing is disabled for the project: link it to an open billing account, then retry")
    if m := _CONSTRAINT.search(text):
        policy = m.group(1)
        if policy.endswith("restrictNonCmekServices"):
            return ConfigError(
                f"an organization policy ({policy}) requires customer-managed encryption keys, which bqspool does "
                "not set yet: ask for an exception for this project"
            )
        return ConfigError(
            f"an organization policy ({policy}) refused the request: ask its owner, or change what it forbids"
        )
    return None
