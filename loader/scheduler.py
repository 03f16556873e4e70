"""``bqspool run``: the drain on an APScheduler schedule, one at a time.

Scheduling is a thin layer: each tick calls ``Drainer.drain_once()``. A
SIGTERM or SIGINT lets the current step finish, then the loop exits.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime

from bqspool.schemas.errors import BqspoolError

from .clients import make_drainer
from .config import Config

log = logging.getLogger("bqspool.loader")


def run_forever(config: Config, stop: threading.Event | None = None) -> None:
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    stop = stop or threading.Event()
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per tick is noise
    drainer = make_drainer(config, should_stop=stop.is_set, progress=True)
    seconds = config.schedule_seconds()
    trigger = IntervalTrigger(seconds=seconds) if seconds else CronTrigger.from_crontab(config.schedule)
    scheduler = BlockingScheduler()

    def tick() -> None:
        try:
            drainer.drain_once()
        except BqspoolError as exc:
            # The buffer keeps everything; the next tick tries again.
            log.error("drain failed (%s): %s", "will retry" if exc.retryable else "needs attention", exc)

    # One job: max_instances=1 and coalesce mean never two drains at once and
    # no backlog of missed ticks; the first drain runs at start.
    scheduler.add_job(tick, trigger, max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))

    def on_signal(signum, frame) -> None:
        log.warning("received %s: finishing the current step, then exiting", signal.Signals(signum).name)
        stop.set()
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.warning("bqspool run: draining %s every %s", config.buffer, config.schedule)
    scheduler.start()
