"""Tidying a table's commit log: archive what was loaded, deal with what was rejected, close what is finished.

At the start of each round, per table, the committer's :class:`Tidier`:

- archives the objects of a ``done`` record, all of them as the bucket
  holds them, and deletes them (see :mod:`.archiver`);
- splits an object a job rejected alone, dead-letters its one row, or
  quarantines it whole (see :mod:`.split`);
- closes finished records: one summary of each (the record, its outcome
  and its archive files) goes to ``commit-archive/``, and the live record
  and its outcome markers are deleted. A record is closed only once every
  object it names is archived or gone.

Every step is safe to repeat, so a committer killed midway leaves nothing
the next one cannot finish.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from bqspool.schemas.errors import PreconditionFailedError

from .. import billing, faults
from ..interfaces import ObjectStore, StoredObject
from ..layout import Layout, Outcome, RecordName
from ..logs import fields
from .archiver import Archiver, sizes_of
from .commitlog import LogReader, Record, TableLog
from .report import CommitReport
from .split import Narrowed, Splitter

log = logging.getLogger("bqspool.loader")


def about(rec: Record) -> dict[str, object]:
    """A log line's fields for a line about ``rec``'s job."""
    return fields(rec.table, job_id=rec.job_id, attempt=rec.attempt)


class Tidier:
    """Archives, splits, quarantines and closes for one committer; ``renew``
    is called before every step that changes anything (the lease)."""

    def __init__(
        self,
        objects: ObjectStore,
        layout: Layout,
        renew: Callable[[], None],
        reader: LogReader,
        on_archived: Callable[[str, str, list[str], str], None],
    ):
        self.objects, self.layout, self.renew, self.reader = objects, layout, renew, reader
        self.splitter = Splitter(objects, layout)
        self.archiver = Archiver(objects, layout, renew, on_archived)

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
            archives: list[str] = []
            if outcome == "done":
                # Every object the record names, as the bucket holds it now: the
                # view ``staged`` may predate another committer's record.
                with report.timing("archive"):
                    archives = self.archiver.archive(
                        table, rec.key, rec.created, sizes_of(self.objects, rec.sources, staged)
                    )
                for s in rec.sources:
                    staged.pop(s, None)
                faults.hit("after_archive")
            elif outcome == "failed-data" and len(rec.sources) == 1:
                split = self._rejected_alone(rec, tlog, staged, rejected, report) or split
            if outcome == "failed-backend" and latest[rec.commit] == rec.attempt:
                continue  # its next attempt is yet to be written
            if outcome == "failed-data" and any(s in staged for s in rec.sources):
                continue  # its objects still load one by one: it says so
            self._close(rec, outcome, tlog, archives)
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

    def _close(self, rec: Record, outcome: Outcome, tlog: TableLog, archives: list[str]) -> None:
        """Write the record's summary to ``commit-archive/``, then delete the live record and its markers.

        The summary records what was spent on it (see :func:`_spent`): in its
        body by stage, and in its metadata as one count, which a listing shows."""
        self.renew()
        name = RecordName(rec.key, outcome)
        if outcome == "done" and rec.events is not None:  # what it loaded, in the name (see layout)
            name = RecordName(rec.key, "done", rec.events, rec.nbytes)
        counts = self.objects.requests
        ship, commit = _spent(counts, rec, outcome)
        summary = {
            **json.loads(rec.to_json()),
            "outcome": outcome,
            "archive": archives,
            "requests": {"ship": ship, "commit": commit},
        }
        spent = billing.encode_ops(billing.add_ops(dict(ship), commit))
        try:
            self.objects.write_object(
                self.layout.archived_record(rec.table, name, rec.created),
                json.dumps(summary).encode(),
                0,
                {billing.OPS_KEY: spent},
            )
        except PreconditionFailedError:
            counts.give_back(rec.table, commit)  # written before a crash, with what was spent then
        except BaseException:
            counts.give_back(rec.table, commit)
            raise
        self.reader.closed(rec.table, rec.key, rec.created, outcome)
        faults.hit("after_summary")
        markers = [m.name for m in tlog.outcomes.get(rec.key, {}).values()]
        self.objects.delete_objects([rec.name, *markers])


def _spent(counts: billing.RequestCounts, rec: Record, outcome: Outcome) -> tuple[dict[str, int], dict[str, int]]:
    """What ``rec``'s summary records: the ships' requests for its objects, if it
    loaded them, and the commit's requests not recorded yet, for its table and
    shared by every table, with the summary's own insert paid ahead."""
    commit = billing.add_ops(counts.take(rec.table, billing.SHARED), {"insert": 1})
    counts.prepay(rec.table, {"insert": 1})
    return (dict(rec.ship_ops) if outcome == "done" else {}), commit


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
