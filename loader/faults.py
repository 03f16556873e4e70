"""Fault points: named places in the drain where tests inject a crash.

Inert in production: ``hit(name)`` does nothing unless the environment
variable ``BQSPOOL_FAULT`` names that point when the process starts
(``BQSPOOL_FAULT=after_upload``), in which case the process kills itself
with SIGKILL there, exactly like a crash at that instant. An optional
``:N`` suffix (``after_upload:3``) crashes on the N-th hit.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "after_seal",
    "after_stage",
    "after_upload",
    "after_group",
    "after_submit",
    "after_job_done",
    "mid_ack",
    "after_ack",
)

_spec = os.environ.get("BQSPOOL_FAULT", "")
_name, _, _count = _spec.partition(":")
_remaining = int(_count) if _count.isdigit() else 1
if _name and _name not in POINTS:
    raise RuntimeError(f"BQSPOOL_FAULT names no fault point: {_name!r} (points: {', '.join(POINTS)})")


def hit(name: str) -> None:
    global _remaining
    if name != _name:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
