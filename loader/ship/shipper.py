"""The in-process shipper, for apps on hosts that lose their disk (Cloud Run, autoscaled pods).

::

    from bqspool.buffer import Buffer
    from bqspool.loader import Shipper, load_config

    buffer = Buffer("/tmp/bqspool/buffer.db", "eixa")
    shipper = Shipper(buffer, load_config()).start()   # ships from a thread, as streams come due
    ...
    buffer.append("user_interactions", event)

A background thread looks at the buffer every ``interval`` seconds
(``ship.check``, 10 s) and ships the streams that are due: those whose
pending events would fill an object of ``ship.target_bytes``, or whose
oldest event is ``ship.max_delay`` old (:mod:`.policy`). The look reads
the buffer file and sends no request, so a quiet app costs nothing. On
SIGTERM (a scale-in, a rolling update) the shipper closes the buffer to
new appends, flushes what was acknowledged, ships everything pending
within ``deadline`` seconds (default 8, inside the 10 s Cloud Run and
Kubernetes give before SIGKILL), and then hands the signal on to whatever
handler the app had installed (or to the default, which ends the
process). It ships the same way at interpreter exit.

What the deadline cannot cover stays in the buffer file: on a disk that
survives (a VM, a pod's volume) the next start ships it; on Cloud Run's
in-memory disk it is lost with the instance. ``scripts/bench_fleet.py``
measures how much one instance hands over in its 10 s (docs/deploy.md).

With request-based billing, Cloud Run throttles the CPU outside requests:
the background thread then barely runs, and shipping happens on SIGTERM.
Use instance-based billing for steady shipping.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from bqspool.schemas.errors import BqspoolError, ConfigError

from ..config import Config

log = logging.getLogger("bqspool.loader")

DEFAULT_DEADLINE_S = 8.0


class Shipper:
    """Ships a buffer from a background thread; ships everything on SIGTERM and at exit.

    ``buffer_or_path`` is the app's :class:`~bqspool.buffer.Buffer` (then
    SIGTERM closes it to new appends first, so every event the app was told
    is stored gets shipped) or the path of its file. ``config`` names the
    bucket and prefix (and ``schemas``, unless the buffer's own are used);
    a shipper never needs BigQuery. ``drainer`` replaces the one built from
    ``config`` (tests pass one on the in-memory fakes).
    """

    def __init__(
        self,
        buffer_or_path: Any,
        config: Config | None = None,
        *,
        interval: float | None = None,  # seconds between looks; default: the configuration's ship.check
        deadline: float = DEFAULT_DEADLINE_S,
        handle_signals: bool = True,
        drainer: Any = None,
    ):
        from dataclasses import replace

        from bqspool.buffer import Buffer

        from ..config import load_config

        self.buffer = buffer_or_path if isinstance(buffer_or_path, Buffer) else None
        path = Path(self.buffer.path if self.buffer is not None else buffer_or_path)
        config = config or load_config()
        if drainer is None:
            from ..clients import make_drainer

            cfg = replace(config, buffer=str(path))
            # The app's buffer knows its schema set: no need to configure it twice.
            own = self.buffer.schemas if cfg.schemas is None and self.buffer is not None else None
            drainer = make_drainer(cfg, commit=False, schemas=own, progress=False)
        self.drainer = drainer
        self.interval = config.seconds("ship_check") if interval is None else interval
        self.deadline = deadline
        self.handle_signals = handle_signals
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous: Any = None
        self._lock = threading.Lock()  # one ship at a time: the thread's, or the last one
        self._last_lock = threading.Lock()
        self._last_done = threading.Event()  # set when the last ship (stop) has ended
        self._last_shipped = 0
        self._stopping = False
        self._in_handler = False  # a SIGTERM handler is running: a second signal waits for it
        self.last_error: BqspoolError | None = None
        self.shipped = 0  # events shipped by this shipper

    def start(self) -> Shipper:
        """Start the background thread and the SIGTERM handler.

        ConfigError from any thread but the main one (unless ``handle_signals``
        is False): Python lets only the main thread install a signal handler,
        and a shipper that cannot ship on SIGTERM would lose the buffer of a
        host that goes (Cloud Run, a pod) without a word."""
        if self.handle_signals and threading.current_thread() is not threading.main_thread():
            raise ConfigError(
                f"Shipper.start() was called from thread {threading.current_thread().name!r}, not the main "
                "thread: only the main thread may install the SIGTERM handler that ships everything before the "
                "process goes. Start the shipper from the main thread, or pass handle_signals=False and call "
                "shipper.stop() from your framework's shutdown hook (it ships what is pending within the deadline)"
            )
        self._thread = threading.Thread(target=self._loop, name="bqspool-shipper", daemon=True)
        self._thread.start()
        if self.handle_signals:
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        atexit.register(self.stop)
        return self

    def ship_now(self, deadline: float | None = None, *, due_only: bool = False) -> int:
        """Ship what is pending (the due streams' only, with ``due_only``), within
        ``deadline`` seconds if given; the events shipped."""
        with self._lock:
            until = None if deadline is None else time.monotonic() + deadline
            try:
                report = self.drainer.ship_once(deadline=until, due_only=due_only)
            except BqspoolError as exc:
                self.last_error = exc
                log.error("shipping failed (%s): %s", "will retry" if exc.retryable else "needs attention", exc)
                return 0
            self.last_error = None
            self.shipped += report.events_shipped
            return report.events_shipped

    def stop(self, deadline: float | None = None) -> int:
        """Stop the thread and ship everything pending within ``deadline`` (default: the
        shipper's); the events shipped by this last ship. A second call (atexit after
        SIGTERM, another thread) waits for the first one's ship and returns its count."""
        limit = self.deadline if deadline is None else deadline
        with self._last_lock:
            first, self._stopping = not self._stopping, True
        if not first:
            self._last_done.wait(timeout=limit + 1.0)
            return self._last_shipped
        try:
            self._stop.set()
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout=limit)
            if self.buffer is not None:
                self.buffer.close()  # no new appends; what was acknowledged is in the file now
            self._last_shipped = self.ship_now(limit)
            return self._last_shipped
        finally:
            self._last_done.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.ship_now(due_only=True)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        # A second SIGTERM (process managers and people send two) arrives while
        # the first handler waits for the last ship, and runs on top of it: it
        # returns, so the first goes on waiting and hands the signal on once.
        if self._in_handler:
            log.warning("SIGTERM again: still shipping what is pending; the process goes when that ends")
            return
        self._in_handler = True
        # The work runs in a thread of its own and the handler waits for it,
        # bounded: the handler interrupts the main thread wherever it was,
        # perhaps holding a lock the last ship needs, and must never hang there.
        started = time.monotonic()
        shipped: list[int] = []
        last = threading.Thread(target=lambda: shipped.append(self.stop()), name="bqspool-last-ship", daemon=True)
        last.start()
        last.join(timeout=self.deadline + 1.0)
        if shipped:
            log.warning("SIGTERM: shipped %d events in %.1fs on the way out", shipped[0], time.monotonic() - started)
        else:
            log.error("SIGTERM: the last ship did not finish within %.0fs; the buffer keeps the rest", self.deadline)
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
