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

W, H = 240, 64  # one chart's drawing in px; labels take a margin inside it
LEFT, BOTTOM = 34, 14

# What to run when a rule fires: the page says what is wrong and where to look.
ACTIONS = {
    "no-data": "bqspool status; bqspool drain --once",
    "error-rate": "bqspool dead-letters list; bqspool quarantine list",
    "delay-p95": "bqspool status (objects waiting, the budget); lower ship.max_delay",
    "job-budget": "bqspool status; raise batch.per_job or the schedule's interval",
    "buffer-full": "bqspool status; is the shipper running?",
    "unreachable": "bqspool drain --once -v (which endpoint, what error)",
    "table-size": "bqspool cost",
    "slow-query": "bqspool cost",
    "null-rate": "bqspool verify",
    "daily-cost": "bqspool cost",
}


def _n(value: float | None) -> str:
    """A count with thousands separators; "-" when unknown."""
    return "-" if value is None else f"{value:,.0f}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}" if seconds < 10 * size else f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _frame(label: str, top: float, left_text: str, right_text: str, body: str) -> str:
    """An SVG chart with its axes: the y axis's top value, the x axis's two ends."""
    x0, y1 = LEFT, H - BOTTOM
    return (
        f'<svg class="chart" role="img" aria-label="{html.escape(label)}" viewBox="0 0 {W} {H}">'
        f'<g class="axes"><line x1="{x0}" y1="2" x2="{x0}" y2="{y1}"/><line x1="{x0}" y1="{y1}" x2="{W}" y2="{y1}"/>'
        f'<text class="y-max" x="{x0 - 3}" y="10" text-anchor="end">{_n(top)}</text>'
        f'<text class="y-zero" x="{x0 - 3}" y="{y1}" text-anchor="end">0</text>'
        f'<text class="x-start" x="{x0}" y="{H - 2}">{html.escape(left_text)}</text>'
        f'<text class="x-end" x="{W}" y="{H - 2}" text-anchor="end">{html.escape(right_text)}</text></g>'
        f"{body}</svg>"
    )


def _bars(values: list[float], label: str) -> str:
    """Events per hour over the last 24 h, oldest first."""
    top = max(values) or 1
    width = (W - LEFT) / max(1, len(values))
    plot = H - BOTTOM - 4
    bars = "".join(
        f'<rect x="{LEFT + i * width:.1f}" y="{H - BOTTOM - v / top * plot:.1f}" width="{max(1.0, width - 1):.1f}" '
        f'height="{v / top * plot:.1f}"><title>{int(v)}</title></rect>'
        for i, v in enumerate(values)
    )
    return _frame(label, top, "-24 h", "now", bars)


def _line(points: list[tuple[float, float]], now: float, label: str) -> str:
    """A value over time, on an axis from its first point (an hour at least) to now."""
    span = max(3600.0, now - min((t for t, _ in points), default=now))
    top = max((v for _, v in points), default=0) or 1
    plot = H - BOTTOM - 6
    xy = [(LEFT + (t - (now - span)) / span * (W - LEFT), H - BOTTOM - 2 - v / top * plot, v) for t, v in points]
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in xy)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2"><title>{int(v)}</title></circle>' for x, y, v in xy)
    line = f'<polyline fill="none" stroke="currentColor" stroke-width="2" points="{coords}"/>' if xy else ""
    return _frame(label, top, f"-{_age(span)}", "now", line + dots)


STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa;max-width:1240px}
h1{font-size:1.3em}table{border-collapse:collapse;margin:.5em 0 1.5em;width:100%}
td,th{padding:.3em .5em;border-bottom:1px solid #ddd;text-align:left;vertical-align:middle}
th{white-space:nowrap;font-weight:600}td.num{text-align:right;white-space:nowrap}
.chart{width:240px;height:64px;background:#fff;border:1px solid #ddd;color:#2a6;display:block}
.chart rect,.chart circle{fill:#2a6}.axes line{stroke:#999;stroke-width:1}.axes text{font-size:9px;fill:#555}
.critical{color:#b00;font-weight:600}.warning{color:#a60;font-weight:600}.ok{color:#2a6}.muted{color:#777}
code{background:#eee;padding:0 .3em}
"""


def _table_row(table: str, f: dict, history: list[dict], now: float) -> str:
    backlog = [
        (
            p["t"],
            p["tables"].get(table, {}).get("waiting_objects", 0) + p["tables"].get(table, {}).get("pending_events", 0),
        )
        for p in history
    ]
    hourly = f["hourly"]
    rate = f"{_n(hourly[-1])}/h last hour" if hourly else ""
    # As the error-rate rule counts it: failed of everything appended in the window.
    failed = f.get("failed_window") or 0
    appended = failed + (f.get("loaded_window") or 0) + (f.get("pending_events") or 0)
    error = f"{failed / appended:.1%}" if appended else "-"
    t = html.escape(table)
    return (
        f'<tr data-table="{t}"><th scope="row">{t}</th>'
        f'<td class="num"><span class="last-load">{_age(f.get("last_load_age_s"))}</span> ago<br>'
        f'<span class="muted">oldest waiting {_age(f.get("waiting_age_s") or None)}</span></td>'
        f'<td class="num delay-p95">{_age(f.get("delay_p95_s"))}</td>'
        f'<td><span class="loaded-24h">{_n(sum(hourly))}</span> <span class="muted">{rate}</span>'
        f"{_bars(hourly, f'events loaded into {table} per hour, last 24 h')}</td>"
        f'<td><span class="backlog-now">{_n(f["backlog"])}</span>{_line(backlog, now, f"backlog of {table}")}</td>'
        f'<td class="num jobs"><span class="jobs-24h">{_n(f["jobs_24h"])}</span> / {_n(f["budget"])}</td>'
        f'<td class="num"><span class="error-rate">{error}</span><br><span class="muted">'
        f'<span class="quarantined">{_n(f["quarantined"])}</span> held, '
        f'<span class="dead">{_n(f["dead_letters"])}</span> rejected</span></td></tr>'
    )


def _active(f: dict) -> bool:
    return bool(f["backlog"] or sum(f["hourly"]) or f["jobs_24h"] or f["quarantined"] or f["dead_letters"])


def _buffer_panel(buf: dict | None) -> str:
    if not buf:
        return '<p class="muted" id="buffer">no buffer on this host</p>'
    cells = (
        ("pending", _n(buf.get("pending"))),
        ("dead-letters", _n(buf.get("dead_letters"))),
        ("dropped", _n(buf.get("dropped"))),
        ("file-size", f"{buf.get('file_bytes', 0) / 1e6:,.1f} MB"),
    )
    head = "".join(f"<th>{k.replace('-', ' ')}</th>" for k, _ in cells)
    row = "".join(f'<td class="num buffer-{k}">{v}</td>' for k, v in cells)
    return f'<table id="buffer"><tr><th>buffer</th>{head}</tr><tr><td>{html.escape(buf.get("path", ""))}</td>{row}</tr></table>'


def _doctor_panel(checks: list[dict] | None) -> str:
    """`bqspool doctor`'s checks, as the monitor made them when it started."""
    if not checks:
        return ""
    rows = "".join(
        f'<tr class="check {html.escape(c["status"])}"><td>{html.escape(c["status"])}</td>'
        f"<td>{html.escape(c['name'])}</td><td>{html.escape(c['detail'])}</td>"
        f"<td>{html.escape(c['fix'])}</td></tr>"
        for c in checks
    )
    return f'<table id="doctor"><tr><th>doctor</th><th>check</th><th>found</th><th>to do</th></tr>{rows}</table>'


def render(state: dict, page: dict, refresh_s: int, title: str = "") -> str:
    """The page for the monitor's last ``state`` and the ``page`` figures of that cycle."""
    name = html.escape(page.get("dataset") or title)
    head = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh_s}">'
        f'<link rel="icon" href="data:,"><title>bqspool status</title><style>{STYLE}</style></head><body>'
        f"<h1>bqspool: {name}</h1>"
    )
    if not state:  # no cycle yet: nothing is known, so nothing is said to be fine
        return head + '<p class="muted" id="waiting">waiting for the first monitoring cycle</p></body></html>'
    now = state.get("evaluated", time.time())
    alerts = sorted(state.get("active", {}).values(), key=lambda a: (a["severity"] != "critical", a["key"]))
    alert_rows = (
        "".join(
            f'<tr class="alert {a["severity"]}"><td>{a["severity"]}</td><td>{html.escape(a["rule"])}</td>'
            f"<td>{html.escape(a['table'])}</td><td>{html.escape(a['message'])}</td>"
            f"<td><code>{html.escape(ACTIONS.get(a['rule'], 'bqspool status'))}</code></td></tr>"
            for a in alerts
        )
        or '<tr><td class="ok" colspan="5">no active alerts</td></tr>'
    )
    tables = page.get("tables", {})
    active = {t: f for t, f in sorted(tables.items()) if _active(f)}
    quiet = sorted(set(tables) - set(active))
    rows = "".join(_table_row(t, f, state.get("history", []), now) for t, f in active.items())
    unavailable = "".join(
        f"<li>{html.escape(rule)}: {html.escape(why)}</li>"
        for rule, why in sorted(state.get("unavailable", {}).items())
    )
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    return (
        head
        + f'<p class="muted">as of {stamp}; this page refreshes every {refresh_s} s</p>'
        + '<h2>Alerts</h2><table id="alerts"><tr><th>severity</th><th>rule</th><th>table</th><th>what</th>'
        + f"<th>what to run</th></tr>{alert_rows}</table>"
        + '<h2>Tables</h2><table id="tables"><tr><th>table</th><th>last load</th><th>p95 delay</th>'
        + "<th>events loaded, 24 h</th><th>backlog</th><th>load jobs / budget</th><th>errors</th></tr>"
        + rows
        + "</table>"
        + (f'<p class="muted" id="quiet">no data in 24 h: {html.escape(", ".join(quiet))}</p>' if quiet else "")
        + "<h2>This host</h2>"
        + _buffer_panel(page.get("buffer"))
        + _doctor_panel(page.get("doctor"))
        + (f"<h2>Not available here</h2><ul>{unavailable}</ul>" if unavailable else "")
        + "</body></html>"
    )


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
        title: str = "",
    ):
        self.title = title  # the dataset, said before the first cycle has named it
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
                        200,
                        "text/html; charset=utf-8",
                        render(outer.state, outer.page, outer.refresh_s, outer.title).encode(),
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
