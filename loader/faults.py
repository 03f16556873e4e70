"""Fault points: named places in the ship and commit stages where tests inject a crash.

Inert in production: ``hit(name)`` does nothing unless the environment
variable ``BQSPOOL_FAULT`` names that point when the process starts
(``BQSPOOL_FAULT=after_upload``), in which case the process kills itself
with SIGKILL there, exactly like a crash at that instant. An optional
``:N`` suffix (``after_upload:3``) crashes on the N-th hit, and a ``:stop``
suffix (``after_stage:1:stop``) stops the process with SIGSTOP instead, as
a VM pause would, until someone sends it SIGCONT.
"""

from __future__ import annotations

import os
import signal
import threading

POINTS = (
    "after_seal",
    "after_stage",
    "after_upload",
    "mid_ship",
    "after_ship",
    # the commit stage's step boundaries
    "after_record",
    "after_submit",
    "after_job_done",
    "after_archive_write",
    "after_archive",
    "after_summary",
    "after_split",
    # restore: after an archived object is staged again
    "after_restore_copy",
)

_spec = os.environ.get("BQSPOOL_FAULT", "").split(":")
_name = _spec[0]
_remaining = int(_spec[1]) if len(_spec) > 1 and _spec[1].isdigit() else 1
_signal = signal.SIGSTOP if _spec[-1] == "stop" else signal.SIGKILL
if _name and _name not in POINTS:
    raise RuntimeError(f"BQSPOOL_FAULT names no fault point: {_name!r} (points: {', '.join(POINTS)})")


def hit(name: str) -> None:
    global _remaining
    if name != _name:
        return
    _remaining -= 1
    if _remaining == 0 or (_remaining < 0 and _signal == signal.SIGKILL):
        # To this thread: it handles the signal on its way back from the
        # call, so it goes no further than the point. Sent to the process,
        # the signal may land on another thread first, and a ship's upload
        # thread would run on into its next step while the process stops.
        signal.pthread_kill(threading.get_ident(), _signal)
