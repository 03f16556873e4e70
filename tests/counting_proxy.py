"""A counting HTTP proxy in front of fake-gcs-server: what reached the server, by billed operation.

The adapters count their own requests (``bqspool.loader.backends.meter``);
this counts them again on the other side of the wire, with its own reading
of the JSON API, so a test can hold one against the other. A batch request
is opened and each call in it counted, as GCS bills them.
"""

from __future__ import annotations

import http.client
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_INNER = re.compile(rb"^(GET|POST|PUT|PATCH|DELETE) (?:https?://[^/\s]+)?(/\S+)", re.MULTILINE)
HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


def classify(method: str, target: str) -> str | None:
    """The operation GCS bills for one request; None for a resumable upload's data."""
    url = urlsplit(target)
    path, query = url.path, parse_qs(url.query)
    if path.startswith("/upload/"):
        if method == "PUT" or "upload_id" in query:
            return None  # the data of a resumable upload: billed with its start
        return "insert"
    if method == "DELETE":
        return "delete"
    if method == "POST":
        for verb, op in (("/copyTo/", "copy"), ("/rewriteTo/", "rewrite"), ("/compose", "compose")):
            if verb in path:
                return op
        return "insert"
    if method in ("PATCH", "PUT"):
        return "patch"
    if path.startswith("/download/") or query.get("alt") == ["media"]:
        return "read"
    if path.endswith("/o"):
        return "list"
    return "get"


class CountingProxy:
    """Forwards every request to ``upstream`` (``http://host:port``) and counts it."""

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.counts: Counter[str] = Counter()
        self.seen: list[tuple[str, str, bytes]] = []  # every request: method, path and query, body
        # Faults for the next reads of an object's media, in order: an HTTP status
        # answered instead of forwarding, or "corrupt" (the answer with a byte flipped).
        self.read_faults: list[int | str] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.count(self.command, self.path, body)
                fault = proxy.fault_for(self.command, self.path)
                if fault is not None and fault != "corrupt":
                    self.send_response(fault)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                if fault == "corrupt" and data:  # one byte flipped on the way: the client's crc32c check fails
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                self.send_response(answer.status, answer.reason)
                for k, v in answer.getheaders():
                    if k.lower() not in HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def count(self, method: str, target: str, body: bytes) -> None:
        if urlsplit(target).path.startswith("/batch/"):
            ops = [classify(m.decode(), t.decode()) for m, t in _INNER.findall(body)]
        else:
            ops = [classify(method, target)]
        with self._lock:
            self.counts.update(op for op in ops if op is not None)
            self.seen.append((method, target, body))

    def fault_for(self, method: str, target: str) -> int | str | None:
        """The fault this request meets, if it is a read of media and one is waiting."""
        with self._lock:
            if self.read_faults and classify(method, target) == "read":
                return self.read_faults.pop(0)
        return None

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
