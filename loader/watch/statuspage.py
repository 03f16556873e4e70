"""``bqspool monitor --serve``: /metrics, /healthz and one HTML page a person can look at.

The page is rendered on the server from the monitor's last cycle: per-table
backlog and events loaded over the last 24 h as inline SVG charts, load jobs
against the budget, active alerts, quarantined objects and dead letters. No
script and no external asset: it works offline, and it refreshes itself
with a meta refresh.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import html
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from bqspool.schemas.errors import ConfigError

W, H = 360, 80  # one chart's size in px


def _bars(values: list[float], label: str) -> str:
    top = max(values) or 1
    width = W / max(1, len(values))
    bars = "".join(
        f'<rect x="{i * width:.1f}" y="{H - v / top * (H - 4):.1f}" width="{max(1.0, width - 1):.1f}" '
        f'height="{v / top * (H - 4):.1f}"><title>{int(v)}</title></rect>'
        for i, v in enumerate(values)
    )
    return f'<svg class="chart" role="img" aria-label="{html.escape(label)}" viewBox="0 0 {W} {H}">{bars}</svg>'


def _line(points: list[tuple[float, float]], since: float, label: str) -> str:
    if not points:
        return f'<svg class="chart" role="img" aria-label="{html.escape(label)}" viewBox="0 0 {W} {H}"></svg>'
    top = max(v for _, v in points) or 1
    xy = [((t - since) / 86_400 * W, H - 3 - v / top * (H - 6), v) for t, v in points]
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in xy)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5"><title>{int(v)}</title></circle>' for x, y, v in xy)
    return (
        f'<svg class="chart" role="img" aria-label="{html.escape(label)}" viewBox="0 0 {W} {H}">'
        f'<polyline fill="none" stroke="currentColor" stroke-width="2" points="{coords}"/>{dots}</svg>'
    )


STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:middle}
.chart{width:360px;height:80px;background:#fff;border:1px solid #ddd;color:#2a6}
.chart rect,.chart circle{fill:#2a6}.critical{color:#b00;font-weight:600}.warning{color:#a60;font-weight:600}
.ok{color:#2a6}.muted{color:#777}
"""


def render(state: dict, page: dict, refresh_s: int) -> str:
    """The page for the monitor's last ``state`` and the ``page`` figures of that cycle."""
    now = state.get("evaluated", time.time())
    alerts = sorted(state.get("active", {}).values(), key=lambda a: (a["severity"] != "critical", a["key"]))
    rows = []
    for table, figures in sorted(page.get("tables", {}).items()):
        backlog = [
            (
                p["t"],
                p["tables"].get(table, {}).get("waiting_objects", 0)
                + p["tables"].get(table, {}).get("pending_events", 0),
            )
            for p in state.get("history", [])
        ]
        hourly = figures["hourly"]
        rows.append(
            f'<tr data-table="{html.escape(table)}"><td>{html.escape(table)}</td>'
            f'<td><span class="backlog-now">{figures["backlog"]}</span><br>{_line(backlog, now - 86_400, f"backlog of {table}, last 24 h")}</td>'
            f'<td><span class="loaded-24h">{sum(hourly)}</span><br>{_bars(hourly, f"events loaded into {table} per hour, last 24 h")}</td>'
            f'<td class="jobs"><span class="jobs-24h">{figures["jobs_24h"]}</span> / {figures["budget"]}</td>'
            f'<td class="quarantined">{figures["quarantined"]}</td><td class="dead">{figures["dead_letters"]}</td></tr>'
        )
    alert_rows = (
        "".join(
            f'<tr class="alert {a["severity"]}"><td>{a["severity"]}</td><td>{html.escape(a["rule"])}</td>'
            f"<td>{html.escape(a['table'])}</td><td>{html.escape(a['message'])}</td></tr>"
            for a in alerts
        )
        or '<tr><td class="ok" colspan="4">no active alerts</td></tr>'
    )
    unavailable = "".join(
        f"<li>{html.escape(rule)}: {html.escape(why)}</li>"
        for rule, why in sorted(state.get("unavailable", {}).items())
    )
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh_s}">
<link rel="icon" href="data:,"><title>bqspool status</title><style>{STYLE}</style></head><body>
<h1>bqspool: {html.escape(page.get("dataset", ""))}</h1>
<p class="muted">as of {stamp}; this page refreshes every {refresh_s} s</p>
<h2>Alerts</h2><table id="alerts"><tr><th>severity</th><th>rule</th><th>table</th><th>what</th></tr>{alert_rows}</table>
<h2>Tables</h2><table id="tables"><tr><th>table</th><th>backlog (objects + buffered events)</th>
<th>events loaded, 24 h</th><th>load jobs 24 h / budget</th><th>quarantined</th><th>dead letters</th></tr>
{"".join(rows)}</table>
{f"<h2>Not available here</h2><ul>{unavailable}</ul>" if unavailable else ""}
</body></html>"""


class _BoundedServer(HTTPServer):
    """An HTTP server with a fixed pool of workers: a connection past them is
    turned away at once (503), never given a thread of its own, so slow or idle
    clients cannot pile up threads (900 held 904 threads before)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, workers: int):
        super().__init__(address, handler)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="bqspool-status")
        self._free = threading.BoundedSemaphore(workers)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._free.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        self._pool.submit(self._work, request, client_address)

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._free.release()

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def bind_address(address: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT``; the host is 127.0.0.1 unless named (the page
    shows the dataset's figures: expose it on purpose, with a token)."""
    host, _, port = address.rpartition(":")
    try:
        return host.strip("[]") or "127.0.0.1", int(port)
    except ValueError:
        raise ConfigError(f"--serve {address!r}: give HOST:PORT, like 127.0.0.1:8080") from None


def authorized(header: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``token``: ``Bearer TOKEN``, or
    HTTP Basic with TOKEN as the password (what a browser's own prompt sends)."""
    if not token:
        return True
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.strip(), token)
    if scheme.lower() == "basic":
        try:
            password = base64.b64decode(value.strip()).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(password, token)
    return False


class StatusServer:
    """Serves the page, /healthz and /metrics from the monitor's latest cycle, in a thread.

    Each connection has ``idle_timeout`` seconds to send its request and take the
    answer, and at most ``workers`` are served at once. With ``token``, the
    page and /metrics ask for it (Bearer, or Basic with it as the password);
    /healthz stays open for health checks."""

    def __init__(
        self,
        address: str,
        metrics_text,
        refresh_s: int = 30,
        *,
        token: str | None = None,
        idle_timeout: float = 10.0,
        workers: int = 8,
    ):
        self.state: dict[str, Any] = {}
        self.page: dict[str, Any] = {}
        self.metrics_text = metrics_text
        self.refresh_s = refresh_s
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = idle_timeout  # an idle or slow client is dropped, its worker freed

            def do_GET(self) -> None:
                path = self.path.partition("?")[0]
                if path == "/healthz":
                    critical = [a for a in outer.state.get("active", {}).values() if a["severity"] == "critical"]
                    body = "ok\n" if not critical else "".join(f"critical: {a['message']}\n" for a in critical)
                    self._send(503 if critical or not outer.state else 200, "text/plain", body.encode())
                elif not authorized(self.headers.get("Authorization"), token):
                    self._send(
                        401,
                        "text/plain",
                        b"a token is needed: Authorization: Bearer TOKEN\n",
                        {"WWW-Authenticate": 'Basic realm="bqspool"'},
                    )
                elif path == "/metrics":
                    self._send(200, "text/plain; version=0.0.4", outer.metrics_text())
                elif path in ("/", "/index.html"):
                    self._send(
                        200, "text/html; charset=utf-8", render(outer.state, outer.page, outer.refresh_s).encode()
                    )
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, code: int, kind: str, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # requests are not worth a log line each
                pass

        self.server = _BoundedServer(bind_address(address), Handler, workers)
        self.thread = threading.Thread(target=self.server.serve_forever, name="bqspool-status", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> StatusServer:
        self.thread.start()
        return self

    def update(self, state: dict, page: dict) -> None:
        self.state, self.page = state, page

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
