"""Tidying a table's commit log: archive what was loaded, deal with what was rejected, close what is finished.

At the start of each round, per table, the committer's :class:`Tidier`:

- moves the objects of a ``done`` record to ``archive/`` (many moves to a
  request, over a few threads), then the record to ``commit-archive/``;
- splits an object a job rejected alone, dead-letters its one row, or
  quarantines it whole (see :mod:`.split`);
- closes void and superseded records, and outcome markers whose record was
  closed before them (a crash between the two).

Every move copies before it deletes and is safe to repeat, so a committer
killed midway leaves nothing the next one cannot finish.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import faults
from ..interfaces import ObjectStore, StoredObject
from ..layout import Layout, ObjectArea, RecordName
from ..logs import fields
from .commitlog import Record, TableLog
from .report import CommitReport
from .split import Narrowed, Splitter

log = logging.getLogger("bqspool.loader")

MOVE_CHUNK = 100  # objects archived per call of move_objects: one GCS batch request of each kind


def about(rec: Record) -> dict[str, object]:
    """A log line's fields for a line about ``rec``'s job."""
    return fields(rec.table, job_id=rec.job_id, attempt=rec.attempt)


class Tidier:
    """Archives, splits, quarantines and closes for one committer; ``renew``
    is called before every step that changes anything (the lease)."""

    def __init__(self, objects: ObjectStore, layout: Layout, renew: Callable[[], None], workers: int = 8):
        self.objects, self.layout, self.renew = objects, layout, renew
        self.splitter = Splitter(objects, layout)
        # The storage client keeps 10 connections per pool: more threads only churn them.
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> Tidier:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="bqspool-move")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def tidy(self, table: str, tlog: TableLog, staged: dict[str, StoredObject], report: CommitReport) -> bool:
        """Archive, quarantine, split and close what the log says is finished; whether anything was split."""
        split = False
        latest = {r.commit: r.attempt for r in tlog.latest().values()}
        rejected = {
            r.sources[0] for r in tlog.records.values() if tlog.outcome(r.key) == "failed-data" and len(r.sources) == 1
        }
        # Done records first: a group's record closes once its objects, loaded alone, are archived.
        for rec in sorted(tlog.records.values(), key=lambda r: (tlog.outcome(r.key) != "done", r.name)):
            outcome = tlog.outcome(rec.key)
            if outcome is None:
                continue
            if outcome == "done":
                self._move_all([s for s in rec.sources if s in staged], "archive", staged)
                faults.hit("after_archive")
            elif outcome == "failed-data" and len(rec.sources) == 1:
                split = self._rejected_alone(rec, tlog, staged, rejected, report) or split
            if outcome == "failed-backend" and latest[rec.commit] == rec.attempt:
                continue  # its next attempt is yet to be written
            if outcome == "failed-data" and any(s in staged for s in rec.sources):
                continue  # its objects still load one by one: it says so
            self._close(rec, tlog)
        self._close_orphans(table, tlog)
        return split

    def _close_orphans(self, table: str, tlog: TableLog) -> None:
        """Outcomes whose record was closed before them (a crash between the two)."""
        known = {r.key for r in tlog.records.values()}
        for obj in tlog.objects:
            name = RecordName.parse(obj.name)
            if name is not None and name.kind != "record" and name.key not in known:
                self.renew()
                self.objects.move_object(obj.name, self.layout.archived_record(table, name, obj.created))

    def _rejected_alone(
        self, rec: Record, tlog: TableLog, staged: dict[str, StoredObject], rejected: set[str], report: CommitReport
    ) -> bool:
        """Split the object, dead-letter its one row, or quarantine its shipped object
        whole (see :mod:`.split`); whether it was split."""
        (src,) = rec.sources
        under_way = self.splitter.quarantine_under_way(src)
        if src not in staged and not under_way:
            return False
        marker = tlog.outcomes[rec.key]["failed-data"]
        found = self.objects.read_object(marker.name)
        error = json.loads(found[0]).get("error", "") if found else ""
        reason = f"rejected by load job {rec.job_id}: {error}"
        self.renew()
        staged.pop(src, None)
        if under_way or self.splitter.whole_rejected(src, rejected):
            root = self.splitter.quarantine_whole(
                src, f"both halves were rejected, so not a few bad rows: {reason}", staged
            )
            if report.held_back(rec.table, root):
                log.error(
                    "object %s quarantined: load jobs rejected both its halves; see `bqspool quarantine list`", root
                )
            return False
        done = self.splitter.narrow(src, reason)
        _report_narrowed(rec, src, done, report)
        return done == "split"

    def _move_all(self, names: list[str], area: ObjectArea, staged: dict[str, StoredObject]) -> None:
        if not names:
            return
        assert self._pool is not None, "a Tidier moves objects inside its with block"
        self.renew()
        moves = [(n, self.layout.moved(n, area)) for n in names]
        # In chunks the store can batch (GCS: 100 calls a request), over the pool.
        chunks = [moves[k : k + MOVE_CHUNK] for k in range(0, len(moves), MOVE_CHUNK)]
        list(self._pool.map(self.objects.move_objects, chunks))
        for n in names:
            staged.pop(n, None)

    def _close(self, rec: Record, tlog: TableLog) -> None:
        """Move a finished record, then its outcomes, to ``commit-archive/``."""
        self.renew()
        self.objects.move_object(
            rec.name, self.layout.archived_record(rec.table, RecordName(rec.key, "record"), rec.created)
        )
        for outcome, marker in tlog.outcomes.get(rec.key, {}).items():
            name = RecordName(rec.key, outcome)
            if outcome == "done" and rec.events is not None:  # what it loaded, in the name (see layout)
                name = RecordName(rec.key, "done", rec.events, rec.nbytes)
            self.objects.move_object(marker.name, self.layout.archived_record(rec.table, name, rec.created))


def _report_narrowed(rec: Record, src: str, done: Narrowed, report: CommitReport) -> None:
    """Count and log what narrowing a lone rejected object did."""
    if done == "unreadable":
        report.held_back(rec.table, src)
        log.error(
            "object %s quarantined: it is not a readable Parquet file; see `bqspool quarantine list`",
            src,
            extra=about(rec),
        )
    elif done == "dead":
        report.dead_lettered += 1
        log.error(
            "load job %s rejected the one event of %s; it is a dead letter with the reason",
            rec.job_id,
            src,
            extra=about(rec),
        )
    else:
        faults.hit("after_split")
        log.warning(
            "load job %s rejected %s alone; loading it in halves to find the bad rows",
            rec.job_id,
            src,
            extra=about(rec),
        )
