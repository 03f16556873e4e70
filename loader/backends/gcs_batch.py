"""GCS batch requests (many JSON API calls in one HTTP request), written and read directly.

The storage client's own ``Batch`` builds every part with the ``email``
package and parses the answer with it, then makes a ``requests`` response
of each part: about 0.5 ms of CPU per call, which at the 20,000 calls of
archiving 10,000 objects was most of a commit's time. The format is small
and fixed, so it is written here: a ``multipart/mixed`` body of
``application/http`` parts, each with a ``Content-ID``, and an answer of
parts whose ``Content-ID`` is ``<response-ID>``. Only the status of each
call is read back; calls that need their answer's body do not batch.

The request goes through the client's own connection, so credentials, the
endpoint (``STORAGE_EMULATOR_HOST`` included) and user agent are the client's.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from urllib.parse import quote

from bqspool.schemas.errors import BackendError
from google.cloud import exceptions as cloud_errors

from ..billing import RequestCounts

MAX_CALLS = 100  # the most calls the JSON API takes in one batch request

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_CONTENT_ID = re.compile(r"^content-id:\s*<?(?:response-)?(\d+)>?\s*$", re.IGNORECASE | re.MULTILINE)


def _object(bucket: str, name: str) -> str:
    """An object's part of a JSON API path (names are quoted whole: ``/`` too)."""
    return f"b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"


def copy_call(bucket: str, name: str, to: str, key: str | None = None) -> tuple[str, str]:
    """A copy of ``name`` to ``to`` that only creates: a 412 if ``to`` exists; encrypted
    with the customer-managed ``key`` when given (a copy keeps no key of its own)."""
    path = f"/storage/v1/{_object(bucket, name)}/copyTo/{_object(bucket, to)}?ifGenerationMatch=0"
    return "POST", path + (f"&destinationKmsKeyName={quote(key, safe='')}" if key else "")


def delete_call(bucket: str, name: str) -> tuple[str, str]:
    return "DELETE", f"/storage/v1/{_object(bucket, name)}"


def encode(base_url: str, calls: Sequence[tuple[str, str]], boundary: str) -> str:
    """The ``multipart/mixed`` body of ``calls`` ((method, path) pairs, bodiless)."""
    parts = [
        f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <{i}>\r\n\r\n"
        f"{method} {base_url}{path}{'&' if '?' in path else '?'}prettyPrint=false HTTP/1.1\r\n\r\n\r\n"
        for i, (method, path) in enumerate(calls)
    ]
    return "".join(parts) + f"--{boundary}--\r\n"


def statuses(content_type: str, body: bytes, n: int) -> list[int]:
    """Each call's HTTP status, in the order of the calls.

    Answers are matched to calls by their ``Content-ID`` where every part
    has one and they name each call once; otherwise by position, as the
    API answers in order. BackendError if the answer is not ``n`` parts.
    """
    found = _BOUNDARY.search(content_type or "")
    if found is None:
        raise BackendError(f"a batch request came back without a multipart answer ({content_type!r})")
    text = body.decode("utf-8", "replace").replace("\r\n", "\n")
    codes: list[int] = []
    ids: list[int | None] = []
    for part in text.split(f"--{found.group(1)}")[1:]:
        if part.startswith("--"):
            break  # the closing delimiter
        head, _, answer = part.lstrip("\n").partition("\n\n")
        status_line = answer.lstrip("\n").partition("\n")[0].split()
        if len(status_line) < 2 or not status_line[1].isdigit():
            raise BackendError(f"a batch request's answer has a part without an HTTP status: {status_line!r}")
        codes.append(int(status_line[1]))
        cid = _CONTENT_ID.search(head)
        ids.append(int(cid.group(1)) if cid else None)
    if len(codes) != n:
        raise BackendError(f"a batch request of {n} calls came back with {len(codes)} answers")
    if all(i is not None for i in ids) and sorted(ids) == list(range(n)):  # type: ignore[type-var]
        out = [0] * n
        for i, code in zip(ids, codes, strict=True):
            out[i] = code  # type: ignore[index]
        return out
    return codes


def send(
    client, calls: Sequence[tuple[str, str]], counts: RequestCounts | None = None, timeout: float = 60.0
) -> list[int]:
    """Make ``calls`` (at most MAX_CALLS) in one batch request; the status of each.

    Raises the client's exception for the status of the request as a whole
    (a 5xx is transient to the retry policy); the calls' own statuses are
    for the caller to judge. Each call is counted in ``counts`` as the
    operation it is (GCS bills a batch per call).
    """
    if not calls:
        return []
    if len(calls) > MAX_CALLS:
        raise ValueError(f"{len(calls)} calls in one batch request; the API takes {MAX_CALLS}")
    base = client._connection.API_BASE_URL.rstrip("/")
    boundary = uuid.uuid4().hex
    response = client._base_connection._make_request(
        "POST",
        f"{base}/batch/storage/v1",
        data=encode(base, calls, boundary),
        headers={"Content-Type": f'multipart/mixed; boundary="{boundary}"'},
        timeout=timeout,
    )
    if counts is not None:
        for method, path in calls:
            counts.add("delete" if method == "DELETE" else "copy" if "/copyTo/" in path else "insert")
    if not 200 <= response.status_code < 300:
        raise cloud_errors.from_http_response(response)
    return statuses(response.headers.get("Content-Type", ""), response.content, len(calls))
