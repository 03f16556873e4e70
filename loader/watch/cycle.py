"""One monitoring cycle: evaluate the rules, notify on changes, keep the state.

An alert notifies once when it starts firing and once when it resolves,
never every cycle: the state file (``monitor_state``) remembers what was
active, so this holds across ``monitor --once`` runs from cron too. A
webhook that fails is retried, then logged; its notifications wait in the
state for the next cycle, and the monitor carries on. The state is read
once per cycle and handed to the evaluation.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bqspool.schemas.errors import BqspoolError

from ..commit.commitlog import DAY_S
from ..logs import fields
from .monitor import Monitor
from .rules import Findings

log = logging.getLogger("bqspool.loader")


class Notifier(Protocol):
    """Where notifications go (``backends.webhook.Webhook``): False if one could not be
    delivered; ``should_stop()`` once nothing more should be tried."""

    def send(self, note: dict) -> bool: ...

    def should_stop(self) -> bool: ...


def text_of(note: dict) -> str:
    """A notification's ``text``: what Slack shows."""
    a = note["alert"]
    if note["status"] == "firing":
        return f"[bqspool] FIRING {a['severity']} {a['rule']}: {a['message']}"
    return (
        f"[bqspool] RESOLVED {a['severity']} {a['rule']} on {a['table']}: was {a['value']} (threshold {a['threshold']})"
    )


def load_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def save_state(path: Path, state: dict) -> None:
    """Write the state owner-only (it names tables and alerts), atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two monitors never share a temporary file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(state, sort_keys=True))
    os.chmod(tmp, 0o600)  # an older file of ours may have been 0644
    tmp.replace(path)


def history_points(state: dict, findings: Findings, now: float, keep_s: float = DAY_S) -> list[dict]:
    """The page's 24 h of samples: the previous ones, plus this evaluation's."""
    points = [p for p in state.get("history", []) if p["t"] >= now - keep_s]
    points.append({"t": now, "tables": findings.samples})
    return points[-2000:]


def cycle(monitor: Monitor, notifier: Notifier | None, state_path: Path | None = None) -> tuple[Findings, dict]:
    """Evaluate once, send what changed, save the state; the findings and the new state."""
    path = state_path or Path(monitor.config.monitor_state)
    state = load_state(path)
    findings = monitor.evaluate(state)
    now = monitor.clock()
    active = {a.key: a.as_dict() for a in findings.alerts}
    before = state.get("active", {})
    notes = list(state.get("unsent", []))
    notes += [{"status": "firing", "alert": active[k]} for k in active if k not in before]
    notes += [{"status": "resolved", "alert": before[k]} for k in before if k not in active]
    for note in notes:
        log.warning(text_of(note), extra=fields(note["alert"]["table"]))
    unsent: list[dict] = []
    if notifier is not None:
        for note in notes:
            # Once told to stop, what is left waits in the state for the next monitor.
            if notifier.should_stop() or not notifier.send({"text": text_of(note), **note}):
                unsent.append(note)
    new_state = {
        "evaluated": now,
        "active": active,
        "since": {k: state.get("since", {}).get(k, now) for k in active},
        "unsent": unsent,
        "dropped": findings.dropped if findings.dropped is not None else state.get("dropped"),
        "unavailable": findings.unavailable,
        "history": history_points(state, findings, now),
    }
    save_state(path, new_state)
    return findings, new_state


def every(
    monitor: Monitor,
    notifier: Notifier | None,
    interval: float,
    should_stop: Callable[[], bool],
    on_cycle: Callable[[Findings, dict], None] | None = None,
) -> None:
    """Cycle every ``interval`` seconds until ``should_stop()``; a failing cycle is logged, not fatal."""
    while not should_stop():
        try:
            findings, state = cycle(monitor, notifier)
            if on_cycle is not None:
                on_cycle(findings, state)
        except BqspoolError as exc:
            log.error("monitor cycle failed: %s; trying again in %.0fs", exc, interval)
        deadline = time.monotonic() + interval
        while not should_stop() and time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
