"""The committer's state in the bucket: the commit log and its one rule.

The log lives under ``PREFIX/commits/TABLE/`` while its work is under way,
and moves to ``commit-archive/TABLE/DAY/`` once finished (the names are
:mod:`bqspool.loader.layout`'s). ``commit-archive``'s done markers carry what
their job loaded in their names, so a listing alone tells what was loaded
(see :mod:`bqspool.loader.operate.history`).

A *record* is created (``if_generation_match=0``) before its job is
submitted. It names the job id, which derives from the record alone
(``bqspool_TABLE_ID_ATTEMPT``), and the objects the job loads. A record
without an outcome is *open*: whoever commits next finishes it, by looking
its job up before inserting it. A transient job failure adds the same
commit's next attempt, a new record.

**The rule.** A record *claims* its objects while it is open or done (a
failed job wrote nothing; a void record was never submitted). Before a
record's job is submitted, the commit log is listed afresh: if an older
record (by creation time, then name) claims any of the same objects, this
record is made void instead. A record exists before its own check, so of
two overlapping records the younger one's check always sees the older:
at most one of them is ever submitted, whatever committers pause, die or
race. The lease keeps committers from getting in each other's way; this
rule keeps them from loading anything twice even when the lease cannot
(a committer paused between its renewal and its request).

A moved object is copied before it is deleted, so an object absent from
``staged/`` that was ever shipped is in one of the areas it moves to: a
host recovering from a crash checks there before it uploads a batch again
(see ``archived.already_handed_over``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..billing import checked_ops
from ..interfaces import ObjectStore, StoredObject
from ..layout import OUTCOMES, Layout, Outcome, RecordName, appended_at, day_of, events_in

DAY_S = 86_400.0


@dataclass(frozen=True)
class Record:
    table: str
    commit: str
    attempt: int
    sources: tuple[str, ...]
    name: str = ""
    created: float = 0.0
    holder: str = ""
    nbytes: int = 0  # the sources' stored size, for `cost` and the audit
    # What the ships that made the sources spent (their objects' metadata): the
    # done summary counts it with the commit's own requests, for `cost`.
    ship_ops: dict[str, int] = field(default_factory=dict, compare=False, hash=False)

    @property
    def events(self) -> int | None:
        """The events its objects hold, by their names; None if a name does not say."""
        counts = [events_in(s) for s in self.sources]
        return None if None in counts else sum(n for n in counts if n is not None)

    @property
    def key(self) -> str:
        return f"{self.commit}-{self.attempt}"

    @property
    def job_id(self) -> str:
        # Letters, digits, _ and - only, well under 1,024 characters.
        return f"bqspool_{self.table}_{self.commit}_{self.attempt}"

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "table": self.table,
                "commit": self.commit,
                "attempt": self.attempt,
                "job_id": self.job_id,
                "holder": self.holder,
                "bytes": self.nbytes,
                "sources": list(self.sources),
                **({"ship_ops": self.ship_ops} if self.ship_ops else {}),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, obj: StoredObject) -> Record:
        doc = json.loads(data)
        return cls(
            doc["table"],
            doc["commit"],
            int(doc["attempt"]),
            tuple(doc["sources"]),
            obj.name,
            obj.created,
            doc["holder"],
            int(doc.get("bytes", 0)),
            checked_ops(doc.get("ship_ops")),
        )


@dataclass
class TableLog:
    """One listing of a table's live commit log, with the records read."""

    records: dict[str, Record] = field(default_factory=dict)  # by key
    outcomes: dict[str, dict[Outcome, StoredObject]] = field(default_factory=dict)  # key -> outcome -> marker
    objects: list[StoredObject] = field(default_factory=list)  # everything listed

    def outcome(self, key: str) -> Outcome | None:
        """The record's outcome; ``done`` wins over anything else written for it."""
        have = self.outcomes.get(key, {})
        for o in OUTCOMES:
            if o in have:
                return o
        return None

    def claiming(self) -> list[Record]:
        return [r for r in self.records.values() if self.outcome(r.key) in (None, "done")]

    def open(self) -> list[Record]:
        return sorted((r for r in self.records.values() if self.outcome(r.key) is None), key=_age)

    def older_claim(self, rec: Record) -> Record | None:
        """An older record claiming any of ``rec``'s objects (the rule, above), or None."""
        mine = set(rec.sources)
        for other in sorted(self.claiming(), key=_age):
            if _age(other) >= _age(rec):
                break
            if other.key != rec.key and mine.intersection(other.sources):
                return other
        return None

    def latest(self) -> dict[str, Record]:
        """Each commit's latest attempt."""
        out: dict[str, Record] = {}
        for r in self.records.values():
            if r.commit not in out or r.attempt > out[r.commit].attempt:
                out[r.commit] = r
        return out


def _age(r: Record) -> tuple[float, str]:
    return (r.created, r.name)


class LogReader:
    """Lists and reads commit logs; records never change, so each is read once."""

    def __init__(self, store: ObjectStore, layout: Layout):
        self.store, self.layout = store, layout
        self._cache: dict[tuple[str, int], Record] = {}
        self._created: dict[str, float] = {}  # record key -> creation time, of records seen live
        # Per table: the closed records' job times from ``commit-archive/`` (None: void), read
        # once and kept up to date with what this committer closes (see :meth:`forget`).
        self._closed: dict[str, dict[str, float | None]] = {}

    def forget(self) -> None:
        """Drop what was read of closed records: another committer may have closed some since."""
        self._closed.clear()

    def closed(self, table: str, key: str, created: float, outcome: str) -> None:
        """A record this committer just closed (its summary written)."""
        known = self._closed.get(table)
        if known is not None:
            known[key] = None if outcome == "void" else created

    def table(self, table: str) -> TableLog:
        """One listing of ``table``'s live commit log."""
        log = TableLog()
        for obj in self.store.list_objects(self.layout.commits(table)):
            self._add(log, obj)
        return log

    def tables(self) -> dict[str, TableLog]:
        """Every table's live commit log, from one listing of them all: a commit
        round lists once, not once per table (a listing is a class A request)."""
        root = self.layout.commits()
        logs: dict[str, TableLog] = {}
        for obj in self.store.list_objects(root):
            self._add(logs.setdefault(obj.name[len(root) :].split("/")[0], TableLog()), obj)
        return logs

    def _add(self, log: TableLog, obj: StoredObject) -> None:
        log.objects.append(obj)
        name = RecordName.parse(obj.name)
        if name is None:
            return
        if name.kind == "record":
            rec = self.record(obj)
            if rec is not None:
                log.records[rec.key] = rec
                self._created[rec.key] = rec.created
        else:
            log.outcomes.setdefault(name.key, {})[name.kind] = obj

    def remember(self, obj: StoredObject, rec: Record) -> None:
        """A record this process just wrote: no need to read it back."""
        self._cache[(obj.name, obj.generation)] = rec
        self._created[rec.key] = rec.created

    def record(self, obj: StoredObject) -> Record | None:
        """The record ``obj`` holds (a listed ``KEY.json``, or a closed record's
        summary), read once; None if it is gone or holds no record (an earlier
        version's outcome marker)."""
        key = (obj.name, obj.generation)
        if key not in self._cache:
            found = self.store.read_object(obj.name)
            if found is None:  # archived between the listing and the read
                return None
            try:
                self._cache[key] = Record.from_json(found.data, obj)
            except (KeyError, TypeError, ValueError):
                return None
        return self._cache[key]

    def jobs_since(self, table: str, since: float, live: TableLog, now: float) -> list[float]:
        """Creation times of the table's jobs since ``since``: live records and the
        summaries of closed ones (and, archived by earlier versions, records),
        void ones excepted: what counts against the daily budget.

        ``live`` may be a listing from before some records were closed: each
        record counts once, by its key."""
        times = {
            r.key: r.created for r in live.records.values() if r.created >= since and live.outcome(r.key) != "void"
        }
        if table not in self._closed:
            self._closed[table] = self._read_closed(table, since)
        for key, created in self._closed[table].items():
            if created is not None and created >= since:
                times.setdefault(key, created)
        return sorted(times.values())

    def _read_closed(self, table: str, since: float) -> dict[str, float | None]:
        """Closed records' job times from ``since``'s day on (one listing: days sort by
        name), void ones as None."""
        listed = self.store.list_objects(
            self.layout.commit_archive(table), start_offset=self.layout.commit_archive(table, day_of(since))
        )
        archived = [(o, n) for o in listed if (n := RecordName.parse(o.name)) is not None]
        out: dict[str, float | None] = {n.key: None for _, n in archived if n.kind == "void"}
        for o, n in archived:
            if n.key not in out and (n.kind == "record" or n.kind in OUTCOMES):
                # When the record was made, where this reader saw it live; else when
                # it was closed, a little later (pacing then errs on the safe side).
                out[n.key] = self._created.get(n.key, o.created)
        return out


def delays(sources: tuple[str, ...] | list[str], loaded_at: float) -> list[tuple[float, int]]:
    """``(seconds from append to load, events)`` for each object whose name says when
    its oldest event was appended (see ``layout.appended_at``)."""
    return [(loaded_at - at, events_in(s) or 1) for s in sources if (at := appended_at(s)) is not None]
