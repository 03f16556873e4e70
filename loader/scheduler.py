"""``bqspool run``: ship, commit or both on an APScheduler schedule, one at a time.

Scheduling is a thin layer over the stages, by role:

- ``ship``: every ``ship.check`` (10 s), the streams that are due ship
  (:mod:`.ship.policy`: a full object, or an event ``ship.max_delay`` old);
  the check reads the buffer file and sends no request;
- ``commit``: on ``schedule`` (90 s), one commit; with nothing staged it
  costs one listing;
- ``all``: ``ship``'s ticks, and a commit after each that shipped something
  (or after one that left work): a single host commits what it shipped.

A SIGTERM or SIGINT lets the current step finish; then a shipping role ships
everything pending within the shutdown deadline (:data:`SHUTDOWN_DEADLINE_S`,
inside the 10 s Cloud Run and Kubernetes give before SIGKILL), and the
loop exits.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bqspool.schemas.errors import BqspoolError

from .clients import make_committer, make_drainer
from .config import Config

if TYPE_CHECKING:
    from .drain import Drainer, DrainReport

log = logging.getLogger("bqspool.loader")

SHUTDOWN_DEADLINE_S = 8.0


def run_forever(config: Config, stop: threading.Event | None = None, role: str = "all") -> None:
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    stop = stop or threading.Event()
    # The scheduler's own lines (a tick per line, "skipped: maximum number of running
    # instances" while a slow tick runs) say nothing an operator acts on: errors only,
    # unless the whole process logs at debug (-vv).
    quiet = logging.getLogger("apscheduler")
    quiet.setLevel(logging.DEBUG if logging.getLogger().level <= logging.DEBUG else logging.ERROR)
    step, drainer, seconds, every = _work(config, role, stop)
    metrics = _metrics(config)
    trigger = IntervalTrigger(seconds=seconds) if seconds else CronTrigger.from_crontab(config.schedule)
    scheduler = BlockingScheduler()

    ticking = threading.Lock()  # held by a running tick: the last ship waits for it

    def tick() -> None:
        with ticking:
            if stop.is_set():  # submitted as the stop came: no new work on the way out
                return
            try:
                report = step()
                log.info("%s", cycle_line(report))
                if metrics is not None:
                    record(metrics, report)
            except BqspoolError as exc:
                # The buffer and the bucket keep everything; the next tick tries again.
                log.error("%s failed (%s): %s", role, "will retry" if exc.retryable else "needs attention", exc)

    # One job: max_instances=1 and coalesce mean never two runs at once and
    # no backlog of missed ticks; the first runs at start.
    scheduler.add_job(tick, trigger, max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))

    def on_signal(signum, frame) -> None:
        log.info("received %s: finishing the current step, then exiting", signal.Signals(signum).name)
        stop.set()
        # Not from here: the handler runs on the main thread, which may hold the
        # executor's lock (a job being submitted), and shutdown takes that lock:
        # a SIGTERM at that instant hung the process for good. A thread waits it out.
        threading.Thread(target=_stop, args=(scheduler,), name="bqspool-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("bqspool run --role %s: %s every %s", role, config.buffer if drainer else config.prefix, every)
    scheduler.start()
    with ticking:  # the tick in flight ends first (its step stops between steps); none starts after
        if drainer is not None:
            last_ship(drainer, stop)


def _work(
    config: Config, role: str, stop: threading.Event
) -> tuple[Callable[[], object], Drainer | None, float | None, str]:
    """What each tick of ``role`` runs, the drainer behind it (None for commit), and how
    often: seconds, or None for a cron schedule, and the setting as written."""
    if role == "commit":
        committer = make_committer(config, should_stop=stop.is_set)
        committer.count_quiet_tables = True  # the metrics start with every table
        return committer.commit_once, None, config.schedule_seconds(), config.schedule
    drainer = make_drainer(config, commit=role == "all", should_stop=stop.is_set, progress=True)
    if drainer.committer is not None:
        drainer.committer.count_quiet_tables = True
    step = (lambda: ship_then_commit(drainer)) if role == "all" else (lambda: drainer.ship_once(due_only=True))
    return step, drainer, config.seconds("ship_check"), config.ship_check


def _stop(scheduler: Any, attempts: int = 200) -> None:
    """Shut ``scheduler`` down, waiting for it to be running (a signal may come first)."""
    from apscheduler.schedulers import SchedulerNotRunningError

    for _ in range(attempts):
        try:
            scheduler.shutdown(wait=False)
            return
        except SchedulerNotRunningError:
            time.sleep(0.05)


def cycle_line(report: Any) -> str:
    """One line about what a cycle did: its ship's, its commit's, or both."""
    from .drain import DrainReport

    if isinstance(report, DrainReport):
        done = report.commit.seconds or report.commit.idle  # a cycle that committed
        return report.ship.line() + ("; " + report.commit.line() if done else "")
    return report.line()


def ship_then_commit(drainer: Drainer) -> DrainReport:
    """``run --role all``'s tick: ship the due streams, then commit if that shipped
    something or the last commit left work (a first tick always commits: a
    process that died may have left work too)."""
    from .drain import DrainReport

    report = DrainReport(ship=drainer.ship_once(due_only=True))
    assert drainer.committer is not None
    if report.ship.batches_shipped or drainer.committer.left_work:
        report.commit = drainer.commit_once()
    return report


def _metrics(config: Config):
    """The loader's metrics, served on ``metrics_address`` if one is configured."""
    if not config.metrics_address:
        return None
    from .watch.metrics import LoaderMetrics

    metrics = LoaderMetrics()
    metrics.serve(config.metrics_address)
    log.info("metrics on http://%s/metrics", config.metrics_address)
    return metrics


def record(metrics, report) -> None:
    """Feed a ship, commit or drain report to the metrics."""
    from .commit.report import CommitReport
    from .drain import DrainReport
    from .ship.report import ShipReport

    if isinstance(report, DrainReport):
        metrics.ship(report.ship)
        metrics.commit(report.commit)
    elif isinstance(report, ShipReport):
        metrics.ship(report)
    elif isinstance(report, CommitReport):
        metrics.commit(report)


def last_ship(drainer, stop: threading.Event, deadline_s: float = SHUTDOWN_DEADLINE_S) -> None:
    """Ship what is pending before the process goes: within ``deadline_s``, whatever stopped it."""
    drainer.should_stop = lambda: False  # the stop was for the schedule, not for this
    try:
        report = drainer.ship_once(deadline=time.monotonic() + deadline_s)
        log.info("shipped %d events on the way out", report.events_shipped)
    except BqspoolError as exc:
        log.error("could not ship on the way out (%s); the buffer keeps the events", exc)
