"""The committer's state in the bucket: the layout, the commit log and its one rule.

Under the configured prefix::

    staged/TABLE/DAY/FILE.parquet          shipped by hosts, not loaded yet
    archive/TABLE/YYYY/MM/DD/FILE.parquet  loaded (DAY is the batch's seal day)
    split/TABLE/DAY/FILE.parquet           rejected alone, and loaded in halves (see :mod:`.split`)
    quarantine/TABLE/DAY/FILE.parquet      held back, with FILE.parquet.reason beside it
    dead/TABLE/DAY/FILE.parquet            one event a job rejected alone, with its .reason
    dropped/TABLE/DAY/FILE.parquet         given up on by an operator
    commits/TABLE/ID-ATTEMPT.json          the commit log: one record per load job
    commits/TABLE/ID-ATTEMPT.OUTCOME       its outcome: done, void, failed-data, failed-backend
    commit-archive/TABLE/YYYY-MM-DD/...    records whose work is finished, by creation day; a done
                                           marker there is ID-ATTEMPT.eEVENTS.bBYTES.done, so a
                                           listing alone tells what was loaded (see :mod:`.history`)
    committer.lease                        see :mod:`.bucket_lease`

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
``staged/`` that was ever shipped is in one of the areas it moves to: a host recovering from a crash checks there before it
uploads a batch again (see :func:`already_handed_over`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

from .interfaces import ObjectStore, StoredObject

OUTCOMES = ("done", "void", "failed-data", "failed-backend")
AREAS_AFTER_STAGED = ("archive", "split", "quarantine", "dead", "dropped")  # where a staged object can move
DAY_S = 86_400.0


@dataclass(frozen=True)
class Layout:
    """Where everything lives under ``prefix``."""

    prefix: str

    def _p(self, *parts: str) -> str:
        return "/".join((self.prefix.strip("/"), *parts))

    @property
    def lease(self) -> str:
        return self._p("committer.lease")

    def area(self, name: str, table: str | None = None) -> str:
        """The prefix of an area of the bucket (``staged``, ``archive``, ``dead`` ...), or of a table's part of it."""
        return self._p(name, f"{table}/" if table else "")

    def staged(self, table: str | None = None) -> str:
        return self.area("staged", table)

    def staged_name(self, table: str, day: str, file: str) -> str:
        return self._p("staged", table, day, file)

    def commits(self, table: str | None = None) -> str:
        return self.area("commits", table)

    def commit_archive(self, table: str, day: str = "") -> str:
        return self._p("commit-archive", table, f"{day}/" if day else "")

    def quarantine(self, table: str | None = None) -> str:
        return self.area("quarantine", table)

    def split(self, name: str) -> tuple[str, str, str]:
        """``(table, day, file)`` of a staged, quarantined or archived object's name."""
        parts = name[len(self.prefix.strip("/")) + 1 :].split("/")
        if parts[0] == "archive":
            return parts[1], "-".join(parts[2:5]), parts[5]
        return parts[1], parts[2], parts[3]

    def moved(self, name: str, area: str) -> str:
        """Where a staged object goes in ``area`` (archive, quarantine or dropped)."""
        table, day, file = self.split(name)
        if area == "archive":
            return self._p("archive", table, *day.split("-"), file)
        return self._p(area, table, day, file)

    def by_table(self, store: ObjectStore, area: str) -> dict[str, list[StoredObject]]:
        """Everything under ``area`` (a prefix from :meth:`area`), per table, from one listing."""
        out: dict[str, list[StoredObject]] = {}
        for o in store.list_objects(area):
            out.setdefault(o.name[len(area) :].split("/")[0], []).append(o)
        return out


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
        )


@dataclass
class TableLog:
    """One listing of a table's live commit log, with the records read."""

    records: dict[str, Record] = field(default_factory=dict)  # by key
    outcomes: dict[str, dict[str, StoredObject]] = field(default_factory=dict)  # key -> outcome -> marker
    objects: list[StoredObject] = field(default_factory=list)  # everything listed

    def outcome(self, key: str) -> str | None:
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

    def table(self, table: str) -> TableLog:
        log = TableLog()
        for obj in self.store.list_objects(self.layout.commits(table)):
            log.objects.append(obj)
            file = obj.name.rpartition("/")[2]
            stem, _, ext = file.partition(".")
            if ext == "json":
                rec = self._record(obj)
                if rec is not None:
                    log.records[rec.key] = rec
            elif ext in OUTCOMES:
                log.outcomes.setdefault(stem, {})[ext] = obj
        return log

    def remember(self, obj: StoredObject, rec: Record) -> None:
        """A record this process just wrote: no need to read it back."""
        self._cache[(obj.name, obj.generation)] = rec

    def _record(self, obj: StoredObject) -> Record | None:
        key = (obj.name, obj.generation)
        if key not in self._cache:
            found = self.store.read_object(obj.name)
            if found is None:  # archived between the listing and the read
                return None
            self._cache[key] = Record.from_json(found[0], obj)
        return self._cache[key]

    def jobs_since(self, table: str, since: float, live: TableLog, now: float) -> list[float]:
        """Creation times of the table's records since ``since`` (live and archived,
        void ones excepted): the jobs that count against the daily budget.

        ``live`` may be a listing from before some records were archived:
        each record counts once, by its key."""
        times = {
            r.key: r.created for r in live.records.values() if r.created >= since and live.outcome(r.key) != "void"
        }
        days = {time.strftime("%Y-%m-%d", time.gmtime(t)) for t in (since, now)}
        for day in sorted(days):
            archived = self.store.list_objects(self.layout.commit_archive(table, day))
            voided = {o.name.rpartition("/")[2].partition(".")[0] for o in archived if o.name.endswith(".void")}
            for o in archived:
                stem, _, ext = o.name.rpartition("/")[2].partition(".")
                if ext == "json" and o.created >= since and stem not in voided:
                    times[stem] = o.created
        return sorted(times.values())


_EVENTS_RE = re.compile(r"(?:-n|~[ab])(\d+)\.parquet$")


def events_in(name: str) -> int | None:
    """The events an object holds, from its name: ``-nN`` for a shipped batch,
    ``~aN``/``~bN`` for a half of a rejected one; None for another name."""
    m = _EVENTS_RE.search(name)
    return int(m.group(1)) if m else None


_APPENDED_RE = re.compile(r"-t(\d{10,16})-")


def appended_at(name: str) -> float | None:
    """When an object's oldest event was appended (epoch seconds), from its name; None if it does not say."""
    m = _APPENDED_RE.search(name.rpartition("/")[2])
    return int(m.group(1)) / 1000 if m else None


def delays(sources: tuple[str, ...] | list[str], loaded_at: float) -> list[tuple[float, int]]:
    """``(seconds from append to load, events)`` for each object whose name says when
    its oldest event was appended (see :func:`appended_at`)."""
    return [(loaded_at - at, events_in(s) or 1) for s in sources if (at := appended_at(s)) is not None]


def already_handed_over(store: ObjectStore, layout: Layout, name: str) -> bool:
    """Whether a shipped object ``name`` is anywhere in the bucket's areas.

    Checked in this order on purpose: a move copies before it deletes, so
    if the object is not in ``staged/`` any more, its copy is already in
    the area it moved to.
    """
    for where in (name, *(layout.moved(name, area) for area in AREAS_AFTER_STAGED)):
        if any(o.name == where for o in store.list_objects(where)):  # metadata only, never the bytes
            return True
    return False


HELD_AREAS = ("quarantine", "dead")


def held(store: ObjectStore, layout: Layout) -> dict[str, dict[str, list[StoredObject]]]:
    """What the bucket holds back, per area (quarantine, dead) and table: objects and their ``.reason`` files."""
    return {area: layout.by_table(store, layout.area(area)) for area in HELD_AREAS}


def status(
    store: ObjectStore,
    layout: Layout,
    budget: int,
    tables: list[str] | None = None,
    now: float | None = None,
    held_back: dict[str, dict[str, list[StoredObject]]] | None = None,
) -> dict:
    """What ``bqspool status`` shows of the commit stage, per table: objects
    waiting and the oldest one's age, load jobs in the last 24 h against the
    budget, and objects held back (quarantined, dead letters). ``tables``
    (the schema set's) are shown even when nothing of theirs waits;
    ``held_back`` is :func:`held`'s answer where the caller has it already."""
    from . import bucket_lease

    now = time.time() if now is None else now
    reader = LogReader(store, layout)
    held_back = held(store, layout) if held_back is None else held_back
    counts = {
        area: {t: n for t, objs in per_table.items() if (n := sum(not o.name.endswith(".reason") for o in objs))}
        for area, per_table in held_back.items()
    }
    staged = layout.by_table(store, layout.staged())
    names = set(staged) | set(layout.by_table(store, layout.commits())) | set(tables or ())
    out = {}
    for table in sorted(names.union(*counts.values())):
        waiting = staged.get(table, [])
        jobs = reader.jobs_since(table, now - DAY_S, reader.table(table), now)
        out[table] = {
            "waiting": len(waiting),
            "oldest_age_s": round(now - min(o.created for o in waiting), 1) if waiting else None,
            "jobs_24h": len(jobs),
            "budget": budget,
            "quarantined": counts["quarantine"].get(table, 0),
            "dead_letters": counts["dead"].get(table, 0),
        }
    return {"tables": out, "committing": bucket_lease.holder_of(store, layout.lease)}
