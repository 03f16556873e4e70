"""What the storage client sends, as GCS bills it, and the server's clock, from every answer.

A response hook on the client's HTTP session sees each request once it is
answered, retries included, so the counts are what was sent, not what was
meant: each page of a listing, each attempt of an upload. Batch requests
are counted per call by :mod:`.gcs_batch`, which knows their parts. The
``Date`` of each answer is the server's clock; :meth:`Meter.now` carries it
forward on this host's monotonic clock.
"""

from __future__ import annotations

import email.utils
import re
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..billing import RequestCounts

_OBJECT_OP = re.compile(r"/o/[^/]+/(copyTo|rewriteTo|compose)(?:/|$)")


def operation(method: str, url: str) -> str | None:
    """The billed operation of one JSON API request, or None for one that is not
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


class Meter:
    """Counts a client's requests and keeps the server's clock."""

    def __init__(self) -> None:
        self.requests = RequestCounts()
        self._lock = threading.Lock()
        self._server: tuple[float, float] | None = None  # (server epoch, local monotonic) of the latest Date

    def install(self, client: Any) -> None:
        """Hook into ``client``'s HTTP session (the google-cloud-storage client's ``_http``)."""
        client._http.hooks.setdefault("response", []).append(self._on_response)

    def _on_response(self, response: Any, *args: Any, **kwargs: Any) -> None:
        op = operation(response.request.method, response.request.url)
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
