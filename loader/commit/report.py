"""What one commit did: objects, events and load jobs, what it held back, deferred and left waiting."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..layout import ObjectName, Outcome
from ..text import counted
from ..timing import StepTimes


@dataclass
class CommitReport(StepTimes):
    objects_loaded: int = 0
    events_loaded: int = 0
    jobs_submitted: int = 0
    quarantined: list[str] = field(default_factory=list)
    dead_lettered: int = 0  # events a load job rejected alone, found by splitting their object
    voided: int = 0  # records given up because an older one claimed their objects
    deferred: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)  # objects still staged per table, after this commit
    # Per table: events and objects loaded, jobs by outcome, (seconds, events) from each loaded
    # object's oldest append to its load, events in objects quarantined, and, where this
    # commit counted them, its load jobs in 24 h (``jobs_24h``), for the metrics.
    per_table: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0
    # Where ``seconds`` went, in part: "load_jobs" (submitting load jobs and waiting
    # for them), "archive" (writing archive files and deleting what they hold).
    step_seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    budget: int = 0  # load jobs per table per day this committer allows itself
    idle: bool = False  # nothing was staged: no lease taken, one listing spent
    # Requests by operation (billing.OPERATIONS), as sent: the object store's, and BigQuery's API calls.
    requests: dict[str, int] = field(default_factory=dict)
    bigquery: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def line(self) -> str:
        """The log's line about this commit."""
        from ..billing import describe

        if self.idle:
            return f"commit: nothing staged ({describe({**self.requests, **self.bigquery})})"
        return (
            f"commit: {counted(self.objects_loaded, 'object')} ({counted(self.events_loaded, 'event')}) loaded with "
            f"{counted(self.jobs_submitted, 'job')} in {self.seconds:.1f}s; {describe({**self.requests, **self.bigquery})}"
            + (f"; quarantined {self.quarantined}" if self.quarantined else "")
            + (f"; deferred {self.deferred}" if self.deferred else "")
        )

    def table(self, table: str) -> dict:
        return self.per_table.setdefault(table, {"events": 0, "objects": 0, "jobs": {}, "delays": [], "quarantined": 0})

    def held_back(self, table: str, name: str) -> bool:
        """Count the object ``name`` of ``table`` quarantined; whether it is new to this report."""
        if name in self.quarantined:
            return False
        self.quarantined.append(name)
        self.table(table)["quarantined"] += ObjectName.of_file(name).events or 0
        return True

    def job(self, table: str, outcome: Outcome) -> None:
        jobs = self.table(table)["jobs"]
        jobs[outcome] = jobs.get(outcome, 0) + 1

    def defer(self, table: str, why: str) -> bool:
        """Say why ``table``'s work waits, unless it says so already; whether it is new."""
        if table in self.deferred:
            return False
        self.deferred[table] = why
        return True
