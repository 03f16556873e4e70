"""The drain: ship this host's buffer, then commit what every host shipped, in one process.

A drain is two stages on one path (docs/architecture.md). *Ship* runs on
every host, on its own buffer file (:mod:`.ship`); *commit* runs once per
dataset, on what every host shipped (:mod:`.commit`). A single host runs
both: ``Drainer.drain_once()``. Each stage is safe to kill at any instant
and to run again; together they load every appended event exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bqspool.schemas import SchemaSet

from .commit.committer import Committer
from .commit.report import CommitReport
from .interfaces import LoadJobs, ObjectStore
from .process import give_back_memory
from .settings import DEFAULTS, Settings
from .ship.report import ShipReport
from .ship.runner import Ship


@dataclass
class DrainReport:
    """What one drain did: each stage's report, and the totals a caller checks."""

    ship: ShipReport = field(default_factory=ShipReport)
    commit: CommitReport = field(default_factory=CommitReport)
    seconds: float = 0.0

    @property
    def events_loaded(self) -> int:
        return self.commit.events_loaded

    @property
    def jobs_submitted(self) -> int:
        return self.commit.jobs_submitted

    @property
    def quarantined(self) -> list[str]:
        return self.ship.quarantined + self.commit.quarantined

    @property
    def dead_lettered(self) -> int:
        return self.commit.dead_lettered

    @property
    def deferred(self) -> dict[str, str]:
        return self.commit.deferred

    @property
    def undrainable(self) -> dict[str, int]:
        return self.ship.undrainable

    @property
    def peak_rss_mb(self) -> float:
        """The process's peak RSS, as the later of the two stages saw it."""
        return max(self.ship.peak_rss_mb, self.commit.peak_rss_mb)

    def as_dict(self) -> dict:
        return {
            "events_loaded": self.events_loaded,
            "jobs_submitted": self.jobs_submitted,
            "quarantined": self.quarantined,
            "dead_lettered": self.dead_lettered,
            "deferred": self.deferred,
            "undrainable": self.undrainable,
            "seconds": self.seconds,
            "peak_rss_mb": self.peak_rss_mb,
            "ship": self.ship.as_dict(),
            "commit": self.commit.as_dict(),
        }


class Drainer:
    """Ships one buffer file, and commits what every host shipped, into one dataset.

    ``objects`` and ``warehouse`` implement the interfaces of
    :mod:`.interfaces` (the Google adapters, or the fakes of
    :mod:`.testing`): the drain never imports a cloud SDK itself. A host
    that only ships passes ``warehouse=None``. The commit's budget and
    pacing are ``settings``', capped by the warehouse's ``limits``.
    """

    def __init__(
        self,
        buffer_path: str | Path,
        schemas: SchemaSet,
        objects: ObjectStore,
        warehouse: LoadJobs | None,
        settings: Settings = DEFAULTS,
        *,
        staging_dir: str | Path | None = None,
        progress: bool = True,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings = settings
        self.shipping = Ship(
            buffer_path, schemas, objects, settings, staging_dir=staging_dir, progress=progress, should_stop=should_stop
        )
        self.committer = (
            None
            if warehouse is None
            else Committer(
                objects,
                warehouse,
                settings,
                tables=list(schemas),
                partitioning={t.name: t.partitioning for t in schemas.tables()},
                should_stop=should_stop,
                clock=clock,
                sleep=sleep,
            )
        )
        if self.committer is not None:
            self.committer.jobs.progress_enabled = progress

    @property
    def should_stop(self) -> Callable[[], bool]:
        return self.shipping.should_stop

    @should_stop.setter
    def should_stop(self, fn: Callable[[], bool]) -> None:
        """Both stages stop (between steps) when ``fn()`` says so."""
        self.shipping.should_stop = fn
        if self.committer is not None:
            self.committer.should_stop = fn

    def drain_once(self, *, due_only: bool = False) -> DrainReport:
        """Ship (with ``due_only``, the due streams only), then commit: what a single
        host runs. The errors of both."""
        started = time.monotonic()
        report = DrainReport(ship=self.shipping.ship_once(due_only=due_only))
        give_back_memory()
        report.commit = self.commit_once()
        report.seconds = round(time.monotonic() - started, 3)
        return report

    def ship_once(self, deadline: float | None = None, *, due_only: bool = False) -> ShipReport:
        """Ship everything pending now (the due streams' only, with ``due_only``), or
        until ``deadline`` (see :meth:`.ship.runner.Ship.ship_once`)."""
        return self.shipping.ship_once(deadline, due_only=due_only)

    def commit_once(self) -> CommitReport:
        """Load everything shipped under the prefix, by any host (see :class:`.commit.committer.Committer`)."""
        if self.committer is None:
            raise ValueError("this drainer has no warehouse: it only ships")
        return self.committer.commit_once()
