"""One monitoring cycle: evaluate the rules, notify on changes, keep the state.

An alert notifies once when it starts firing and once when it resolves,
never every cycle: the state file (``monitor.state``) remembers what was
active, so this holds across ``monitor --once`` runs from cron too. A
webhook that fails is retried, then logged; its notifications wait in the
state for the next cycle, and the monitor carries on.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from bqspool.schemas.errors import BackendUnavailableError, BqspoolError

from .logs import fields
from .monitor import Findings, Monitor, history_points, load_state, save_state
from .retry import RetryPolicy

log = logging.getLogger("bqspool.loader")


def text_of(note: dict) -> str:
    """A notification's ``text``: what Slack shows."""
    a = note["alert"]
    if note["status"] == "firing":
        return f"[bqspool] FIRING {a['severity']} {a['rule']}: {a['message']}"
    return (
        f"[bqspool] RESOLVED {a['severity']} {a['rule']} on {a['table']}: was {a['value']} (threshold {a['threshold']})"
    )


class Webhook:
    """POSTs ``{"text": ..., "status": ..., "alert": {...}}`` as JSON to ``url``."""

    def __init__(self, url: str, retry: RetryPolicy | None = None, timeout: float = 10.0):
        self.url = url
        self.retry = retry or RetryPolicy(initial=0.5, maximum=5.0, deadline=20.0)
        self.timeout = timeout

    def send(self, note: dict) -> bool:
        """Deliver one notification (retried); False, logged, if it could not be."""
        import requests

        body = {"text": text_of(note), **note}

        def attempt() -> None:
            try:
                answer = requests.post(self.url, json=body, timeout=self.timeout)
            except requests.RequestException as exc:
                raise BackendUnavailableError(f"webhook unreachable: {type(exc).__name__}") from None
            if answer.status_code >= 500 or answer.status_code == 429:
                raise BackendUnavailableError(f"webhook answered {answer.status_code}")
            if answer.status_code >= 400:
                raise BqspoolError(f"webhook refused the notification: {answer.status_code}")

        try:
            self.retry.call("send an alert to the webhook", attempt)
            return True
        except BqspoolError as exc:
            log.error("alert notification not delivered (%s); it is kept for the next cycle", exc)
            return False


def cycle(monitor: Monitor, webhook: Webhook | None, state_path: Path | None = None) -> tuple[Findings, dict]:
    """Evaluate once, send what changed, save the state; the findings and the new state."""
    path = state_path or Path(monitor.config.monitor_state)
    state = load_state(path)
    findings = monitor.evaluate()
    now = monitor.clock()
    active = {a.key: a.as_dict() for a in findings.alerts}
    before = state.get("active", {})
    notes = list(state.get("unsent", []))
    notes += [{"status": "firing", "alert": active[k]} for k in active if k not in before]
    notes += [{"status": "resolved", "alert": before[k]} for k in before if k not in active]
    for note in notes:
        log.warning(text_of(note), extra=fields(note["alert"]["table"]))
    unsent = [n for n in notes if not webhook.send(n)] if webhook is not None else []
    new_state = {
        "evaluated": now,
        "active": active,
        "since": {k: state.get("since", {}).get(k, now) for k in active},
        "unsent": unsent,
        "dropped": monitor._dropped if monitor._dropped is not None else state.get("dropped"),
        "unavailable": findings.unavailable,
        "history": history_points(state, findings, now),
    }
    save_state(path, new_state)
    return findings, new_state


def every(monitor: Monitor, webhook: Webhook | None, interval: float, should_stop, on_cycle=None) -> None:
    """Cycle every ``interval`` seconds until ``should_stop()``; a failing cycle is logged, not fatal."""
    while not should_stop():
        try:
            findings, state = cycle(monitor, webhook)
            if on_cycle is not None:
                on_cycle(findings, state)
        except BqspoolError as exc:
            log.error("monitor cycle failed: %s; trying again in %.0fs", exc, interval)
        deadline = time.monotonic() + interval
        while not should_stop() and time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
