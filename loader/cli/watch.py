"""``bqspool monitor``: the alert rules, notifications, and the status page."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import click
from bqspool.schemas import load_schema_set

from .base import fail, main, settings


def _print(findings, as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "alerts": [a.as_dict() for a in findings.alerts],
                    "unavailable": findings.unavailable,
                    "exit_code": findings.exit_code,
                },
                indent=2,
                sort_keys=True,
            )
        )
        return
    for a in sorted(findings.alerts, key=lambda a: (a.severity != "critical", a.key)):
        click.echo(f"{a.severity.upper():8s} {a.rule:12s} {a.message}")
    if not findings.alerts:
        click.echo("ok: no alert fires")
    for rule, why in sorted(findings.unavailable.items()):
        click.echo(f"n/a      {rule:12s} {why}")


@main.command()
@click.option("--once", "mode", flag_value="once", default=True, help="Evaluate once and exit (the default).")
@click.option("--every", "every", metavar="INTERVAL", help="Evaluate every INTERVAL (30s, 5m) until SIGTERM.")
@click.option("--serve", metavar="HOST:PORT", help="Serve the status page, /healthz and /metrics (implies --every).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def monitor(mode: str, every: str | None, serve: str | None, as_json: bool) -> None:
    """Evaluate the alert rules; notify a webhook when one starts and when it resolves.

    Critical: no data loaded for 15 min while events wait, error rate over
    1%, a table over 1 TB, a query over 30 s, the buffer near its cap or
    dropping. Warning: p95 append-to-loaded delay over 10 min, daily cost
    over $50, NULL rate over 5% in named columns, load-job budget over 80%.
    Thresholds are in [monitor] of the configuration. Exit 9 if a critical
    alert fires, 8 if only warnings, 0 if none (with --once).
    """
    from ..backends.webhook import Webhook
    from ..clients import make_object_store, make_warehouse
    from ..watch.cycle import cycle
    from ..watch.cycle import every as loop
    from ..watch.monitor import Monitor

    cfg = settings()
    cfg.require("schemas")
    store = make_object_store(cfg) if cfg.bucket else None
    warehouse = make_warehouse(cfg) if cfg.project and cfg.dataset else None
    watcher = Monitor(cfg, load_schema_set(cfg.schemas), store, warehouse, Path(cfg.buffer))
    stop = threading.Event()
    # Sending gives up when the monitor is told to stop: an unreachable webhook
    # never holds a SIGTERM'd monitor for its whole retry deadline.
    webhook = Webhook(cfg.monitor_webhook, should_stop=stop.is_set) if cfg.monitor_webhook else None
    if every is None and serve is None:
        findings, _ = cycle(watcher, webhook)
        _print(findings, as_json)
        sys.exit(findings.exit_code)
    seconds = _interval(every or "30s")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = gauges = None
    checked: list[dict] = []
    if serve:
        from ..watch.metrics import MonitorGauges
        from ..watch.statuspage import StatusServer

        gauges = MonitorGauges()
        checked = _doctor(cfg, store, warehouse)  # once, as the page's panel
        title = f"{cfg.project}.{cfg.dataset}"
        server = StatusServer(serve, gauges.text, max(5, int(seconds)), token=cfg.monitor_token, title=title).start()
        click.echo(f"status page on {server.address} (/healthz, /metrics)", err=True)

    def on_cycle(findings, state) -> None:
        _print(findings, as_json)
        if server is not None and gauges is not None:
            page = {**watcher.page_figures(findings), "doctor": checked}
            gauges.update(state, page)
            server.update(state, page)

    try:
        loop(watcher, webhook, seconds, stop.is_set, on_cycle)
    finally:
        if server is not None:
            server.stop()


def _doctor(cfg, store, warehouse) -> list[dict]:
    """`bqspool doctor`'s checks for the role this host's configuration implies."""
    from bqspool.schemas.errors import BqspoolError

    from ..clients import make_doctor

    if store is None:
        return []
    role = "all" if warehouse is not None else "ship"
    try:
        return [c.as_dict() for c in make_doctor(cfg, role, store, warehouse).run()]
    except BqspoolError as exc:  # the page still serves; the panel says why it is empty
        return [{"name": "doctor", "status": "fail", "detail": str(exc), "fix": ""}]


def _interval(text: str) -> float:
    from ..config import interval_seconds

    seconds = interval_seconds(text)
    if seconds is None:
        fail(f"--every {text!r}: give an interval like 30s, 5m or 1h")
    return seconds
