"""What a Google client sends, as it is billed, and the server's clock, from every answer.

A response hook on the client's HTTP session sees each request once it is
answered, retries included, so the counts are what was sent, not what was
meant: each page of a listing, each attempt of an upload. Each request is
named by the operation it is (:func:`gcs_operation`,
:func:`bigquery_operation`); GCS batch requests are counted per call by
:mod:`.gcs_batch`, which knows their parts. The ``Date`` of each answer is
the server's clock; :meth:`Meter.now` carries it forward on this host's
monotonic clock.
"""

from __future__ import annotations

import email.utils
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..billing import RequestCounts

_OBJECT_OP = re.compile(r"/o/[^/]+/(copyTo|rewriteTo|compose)(?:/|$)")


def gcs_operation(method: str, url: str, body: Any = None) -> str | None:
    """The billed operation of one GCS JSON API request, or None for one that is not
    billed on its own (a resumable upload's data, a batch request's envelope)."""
    parts = urlsplit(url)
    path, query = parts.path, parse_qs(parts.query)
    if "/batch/" in path:
        return None  # its calls are counted one by one (gcs_batch)
    if path.startswith("/upload/"):
        # A resumable upload is billed once, as an insert: its first request.
        return "insert" if method == "POST" else None
    found = _OBJECT_OP.search(path)
    if found:
        return {"copyTo": "copy", "rewriteTo": "rewrite", "compose": "compose"}[found.group(1)]
    if method == "DELETE":
        return "delete"
    if method in ("PATCH", "PUT"):
        return "patch"
    if method == "POST":
        return "insert"  # an object written through the JSON API, or a bucket
    if path.startswith("/download/") or query.get("alt") == ["media"]:
        return "read"
    if re.search(r"/b/[^/]+/o$", path):
        return "list"
    return "get"  # an object's or a bucket's metadata


def bigquery_operation(method: str, url: str, body: Any = None) -> str | None:
    """What one BigQuery API request is: a load job inserted, a job looked up, a
    query (or a query job), or anything else (tables, datasets)."""
    path = urlsplit(url).path
    if path.endswith("/jobs") and method == "POST":
        data = body if isinstance(body, bytes) else str(body or "").encode()
        return "job_insert" if b'"load"' in data else "query"
    if path.endswith("/queries") and method == "POST":
        return "query"
    if re.search(r"/(jobs|queries)/[^/]+$", path) and method == "GET":
        return "job_lookup"
    return "table_admin"


class Meter:
    """Counts a client's requests by ``operation`` and keeps the server's clock."""

    def __init__(self, operation: Callable[[str, str, Any], str | None] = gcs_operation) -> None:
        self.operation = operation
        self.requests = RequestCounts()
        self._lock = threading.Lock()
        self._server: tuple[float, float] | None = None  # (server epoch, local monotonic) of the latest Date

    def install(self, client: Any) -> None:
        """Hook into ``client``'s HTTP session (a Google client's ``_http``): a client
        without one (a stand-in some tests pass) sends nothing this could count."""
        session = getattr(client, "_http", None)
        if session is not None and hasattr(session, "hooks"):
            session.hooks.setdefault("response", []).append(self._on_response)

    def _on_response(self, response: Any, *args: Any, **kwargs: Any) -> None:
        request = response.request
        op = self.operation(request.method, request.url, request.body)
        if op is not None:
            self.requests.add(op)
        date = response.headers.get("Date")
        if date:
            try:
                server = email.utils.parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError):
                return
            with self._lock:
                self._server = (server, time.monotonic())

    def now(self) -> float:
        """The server's clock: its latest ``Date`` plus the time since here; this
        host's clock until the server has answered once."""
        with self._lock:
            found = self._server
        if found is None:
            return time.time()
        server, at = found
        return server + (time.monotonic() - at)
