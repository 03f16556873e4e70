"""The bucket's names: its areas, the names of shipped objects, and of commit records.

Every name bqspool writes or reads in the bucket is built and parsed here,
and nowhere else. Under the configured prefix::

    staged/TABLE/DAY/FILE.parquet          shipped by hosts, not loaded yet
    archive/TABLE/YYYY/MM/DD/FILE.parquet  loaded (DAY is the batch's seal day)
    split/TABLE/DAY/FILE.parquet           rejected alone, and loaded in halves
    quarantine/TABLE/DAY/FILE.parquet      held back, with FILE.parquet.reason beside it
    dead/TABLE/DAY/FILE.parquet            one event a job rejected alone, with its .reason
    dropped/TABLE/DAY/FILE.parquet         given up on by an operator
    retried/TABLE/DAY/FILE.parquet.reason  the reason an object was held, after a retry
    commits/TABLE/KEY.json                 the commit log: one record per load job
    commits/TABLE/KEY.OUTCOME              its outcome: done, void, failed-data, failed-backend
    commit-archive/TABLE/YYYY-MM-DD/...    records whose work is finished, by creation day; a done
                                           marker there is KEY.eEVENTS.bBYTES.done
    committer.lease                        the committer's lease

An object's FILE (see :class:`ObjectName`) is ``BATCH-DIGEST-tMILLIS-nEVENTS.parquet``
for a shipped batch: its id (``STREAM-BUFFER-SEQLO-SEQHI``), a digest of its
rows, when its oldest event was appended, and how many events it holds. A
half of a rejected object adds ``~aN`` or ``~bN`` (its events) to its
parent's stem; a restored copy is ``BASE-rRESTORE-nEVENTS.parquet``. No
part holds ``=`` (the emulator and hive partitioning read ``key=value``
folders as columns) or ``/``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from .interfaces import ObjectStore, StoredObject

ObjectArea = Literal["staged", "archive", "split", "quarantine", "dead", "dropped", "retried"]
Area = Literal[ObjectArea, "commits", "commit-archive"]
OBJECT_AREAS: tuple[ObjectArea, ...] = get_args(ObjectArea)
# Where a staged object can move: a move copies before it deletes, so an
# object that was ever shipped and is not in staged/ is in one of these.
AFTER_STAGED: tuple[ObjectArea, ...] = ("archive", "split", "quarantine", "dead", "dropped")
HELD: tuple[ObjectArea, ...] = ("quarantine", "dead")  # what an operator lists, retries or drops

Outcome = Literal["done", "void", "failed-data", "failed-backend"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)  # in this order, the first found wins

PARQUET = ".parquet"
REASON = ".reason"
STRAYS = "~strays"  # the folder of objects the grammar does not hold: no table has this name
_DAY_RE = re.compile(r"\d{4}-\d\d-\d\d")
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,1023}")
_FILE_RE = re.compile(r"[A-Za-z0-9_.~-]+\.parquet")
_EVENTS_RE = re.compile(r"(?:-n|~[ab])(\d+)$")
_APPENDED_RE = re.compile(r"-t(\d{10,16})-")
_RESTORED_RE = re.compile(r"-r[0-9a-f]{10}-n\d+$")
# A shipped batch's stem: STREAM-BUFFER-SEQLO-SEQHI-DIGEST[-tMILLIS]-nEVENTS, then its halves.
_BATCH_RE = re.compile(
    r"(?P<batch>[A-Za-z_][A-Za-z0-9_]*-[A-Za-z0-9]{1,16}-\d{12}-\d{12})-(?P<digest>[0-9a-f]{20})"
    r"(?:-t\d{10,16})?-n\d+(?P<halves>(?:~[ab]\d+)*)"
)
# An archive file: the rows of one record's objects of one seal day (see commit/archiver.py).
_ARCHIVE_RE = re.compile(r"(?P<key>[0-9a-f]{20}-\d+)-(?P<part>\d+)-n\d+")
ObjectKind = Literal["batch", "archive", "restored"]


def is_table_name(name: str) -> bool:
    """Whether ``name`` is a table name the bucket's grammar holds: letters, digits and ``_``."""
    return _TABLE_RE.fullmatch(name) is not None


def day_of(epoch_s: float) -> str:
    """The UTC day of an instant, as YYYY-MM-DD."""
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_s))


@dataclass(frozen=True)
class ObjectName:
    """A shipped object's name within an area: its table, seal day and file."""

    table: str
    day: str
    file: str

    @classmethod
    def batch(
        cls, table: str, day: str, batch_id: str, digest: str, events: int, appended_ms: int | None
    ) -> ObjectName:
        """A batch's name: its id, a digest of its rows, when its oldest event was
        appended (``-tMILLISECONDS``, for the append-to-loaded delay) and its
        number of events (``-nEVENTS``, which the committer counts by)."""
        appended = f"-t{appended_ms}" if appended_ms is not None else ""
        return cls(table, day, f"{batch_id}-{digest[:20]}{appended}-n{events}{PARQUET}")

    @classmethod
    def archive_file(cls, table: str, day: str, key: str, part: int, events: int) -> ObjectName:
        """The archive file of record ``key``'s objects sealed on ``day`` (its ``part``-th)."""
        return cls(table, day, f"{key}-{part}-n{events}{PARQUET}")

    @classmethod
    def of_file(cls, path: str) -> ObjectName:
        """What the file part of any object path says (its table and day left
        empty): its events, when it was appended, whether it is a half, its lineage."""
        return cls("", "", path.rpartition("/")[2])

    @classmethod
    def placeholder(cls, table: str, day: str, batch_id: str) -> ObjectName:
        """The name an earlier version gave a batch until it was staged."""
        return cls(table, day, f"{batch_id}{PARQUET}")

    @property
    def stem(self) -> str:
        return self.file.removesuffix(PARQUET)

    @property
    def events(self) -> int | None:
        """The events it holds, from ``-nN`` (a batch) or ``~aN``/``~bN`` (a half); None for another name."""
        m = _EVENTS_RE.search(self.stem) if self.file.endswith(PARQUET) else None
        return int(m.group(1)) if m else None

    @property
    def appended(self) -> float | None:
        """When its oldest event was appended (epoch seconds); None if the name does not say."""
        m = _APPENDED_RE.search(self.file)
        return int(m.group(1)) / 1000 if m else None

    @property
    def kind(self) -> ObjectKind | None:
        """What bqspool wrote under this name: a shipped batch (or a half of one), an
        archive file, a restored copy; None for a name bqspool never writes."""
        stem = self.stem
        if not self.file.endswith(PARQUET):
            return None
        if _RESTORED_RE.search(stem):
            return "restored"
        if _BATCH_RE.fullmatch(stem):
            return "batch"
        if _ARCHIVE_RE.fullmatch(stem):
            return "archive"
        return None

    @property
    def batch_key(self) -> str | None:
        """What makes a shipped batch (or a half of one) itself: the digest of its rows and
        which half it is. Two objects with one key hold the same rows; None for other names."""
        m = _BATCH_RE.fullmatch(self.stem)
        return f"{m['digest']}{m['halves']}" if m else None

    @property
    def archive_key(self) -> str | None:
        """How an archive file lists this object among those it holds: its batch key,
        or a restored copy's whole stem (which names its restore); None otherwise."""
        return self.stem if self.kind == "restored" else self.batch_key

    @property
    def is_half(self) -> bool:
        """A part split from a rejected object (loaded alone)."""
        return "~" in self.file

    @property
    def is_restored(self) -> bool:
        """A copy staged again by ``bqspool restore``."""
        return _RESTORED_RE.search(self.stem) is not None

    def halves(self, first: int, second: int) -> tuple[ObjectName, ObjectName]:
        """Its two halves, with their numbers of events."""
        return self._with(f"{self.stem}~a{first}{PARQUET}"), self._with(f"{self.stem}~b{second}{PARQUET}")

    @property
    def root(self) -> ObjectName:
        """The shipped object a part was split from (itself if it is no part)."""
        return self._with(self.stem.partition("~")[0] + PARQUET)

    @property
    def parent(self) -> ObjectName | None:
        """The object this half was split from; None for a whole object."""
        return self._with(self.stem.rpartition("~")[0] + PARQUET) if self.is_half else None

    def lineage(self) -> Iterator[ObjectName]:
        """Itself, then its parent, and so on up to its root."""
        name: ObjectName | None = self
        while name is not None:
            yield name
            name = name.parent

    @property
    def sibling_stem(self) -> str:
        """What the file of the other half of this half's parent starts with."""
        stem, _, last = self.stem.rpartition("~")
        return f"{stem}~{'b' if last.startswith('a') else 'a'}"

    def restored(self, table: str, rid: str) -> ObjectName:
        """Its copy for restore ``rid`` into ``table``: a half loads like any object there."""
        base = re.sub(r"-n\d+$", "", self.stem.replace("~", "_h"))
        return ObjectName(table, self.day, f"{base}-r{rid}-n{self.events}{PARQUET}")

    def _with(self, file: str) -> ObjectName:
        return ObjectName(self.table, self.day, file)


def events_in(path: str) -> int | None:
    """The events an object holds, from its name (see :attr:`ObjectName.events`)."""
    return ObjectName.of_file(path).events


def appended_at(path: str) -> float | None:
    """When an object's oldest event was appended, from its name (see :attr:`ObjectName.appended`)."""
    return ObjectName.of_file(path).appended


@dataclass(frozen=True)
class RecordName:
    """A commit-log file: a record (``KEY.json``), an outcome marker
    (``KEY.OUTCOME``), or an archived done marker that carries what it
    loaded (``KEY.eEVENTS.bBYTES.done``)."""

    key: str
    kind: Literal["record"] | Outcome
    events: int | None = None
    nbytes: int | None = None

    @classmethod
    def parse(cls, path: str) -> RecordName | None:
        """The record name of a commit-log object's path; None for anything else."""
        file = path.rpartition("/")[2]
        key, _, ext = file.partition(".")
        if not key:
            return None
        if ext == "json":
            return cls(key, "record")
        if ext in OUTCOMES:
            return cls(key, ext)
        m = _DONE_COUNTS_RE.fullmatch(ext)
        if m is not None:
            return cls(key, "done", int(m["events"]), int(m["bytes"]))
        return None

    @property
    def file(self) -> str:
        if self.kind == "record":
            return f"{self.key}.json"
        if self.kind == "done" and self.events is not None:
            return f"{self.key}.e{self.events}.b{self.nbytes or 0}.done"
        return f"{self.key}.{self.kind}"


_DONE_COUNTS_RE = re.compile(r"e(?P<events>\d+)\.b(?P<bytes>\d+)\.done")


@dataclass(frozen=True)
class Layout:
    """Where everything lives under ``prefix``."""

    prefix: str

    def _p(self, *parts: str) -> str:
        return "/".join((self.prefix.strip("/"), *parts))

    @property
    def lease(self) -> str:
        return self._p("committer.lease")

    def area(self, area: Area, table: str | None = None) -> str:
        """The prefix of an area of the bucket, or of a table's part of it."""
        return self._p(area, f"{table}/" if table else "")

    def staged(self, table: str | None = None) -> str:
        return self.area("staged", table)

    def commits(self, table: str | None = None) -> str:
        return self.area("commits", table)

    # -- objects ---------------------------------------------------------------------

    def path(self, area: ObjectArea, name: ObjectName) -> str:
        """The object ``name`` in ``area`` (the archive keeps days as YYYY/MM/DD folders)."""
        if area == "archive":
            return self._p(area, name.table, *name.day.split("-"), name.file)
        return self._p(area, name.table, name.day, name.file)

    def parse(self, path: str) -> tuple[ObjectArea, ObjectName] | None:
        """The area and name of an object's path; None for a path the grammar does
        not hold (another prefix, a folder missing, a table or day that is not one)."""
        root = self.prefix.strip("/") + "/"
        if not path.startswith(root):
            return None
        parts = path[len(root) :].split("/")
        area = parts[0]
        if area not in OBJECT_AREAS:
            return None
        if area == "archive":
            if len(parts) != 6:
                return None
            table, day, file = parts[1], "-".join(parts[2:5]), parts[5]
        elif len(parts) != 4:
            return None
        else:
            table, day, file = parts[1:]
        if not (_TABLE_RE.fullmatch(table) and _DAY_RE.fullmatch(day) and _FILE_RE.fullmatch(file)):
            return None
        return area, ObjectName(table, day, file)

    def name_of(self, path: str) -> ObjectName:
        """The name of an object bqspool wrote (ValueError for another path)."""
        found = self.parse(path)
        if found is None:
            raise ValueError(f"{path!r} is not an object name of bqspool under {self.prefix!r}")
        return found[1]

    def moved(self, path: str, area: ObjectArea) -> str:
        """Where an object goes when it moves to ``area``."""
        return self.path(area, self.name_of(path))

    def reason(self, path: str, area: ObjectArea) -> str:
        """The ``.reason`` file beside an object moved to ``area``."""
        return self.moved(path, area) + REASON

    def stray(self, path: str, area: ObjectArea = "quarantine") -> str:
        """Where an object the grammar does not hold goes in ``area``: under
        ``STRAYS`` (no table is named so), its path below the prefix flattened."""
        root = self.prefix.strip("/") + "/"
        rest = path[len(root) :] if path.startswith(root) else path
        return self._p(area, STRAYS, rest.replace("%", "%25").replace("/", "%2F"))

    def unstray(self, path: str) -> str | None:
        """The original path of a stray moved by :meth:`stray`; None for another path."""
        root = self.prefix.strip("/") + "/"
        parts = path[len(root) :].split("/") if path.startswith(root) else []
        if len(parts) != 3 or parts[1] != STRAYS:
            return None
        return root + parts[2].replace("%2F", "/").replace("%25", "%")

    # -- the commit log ---------------------------------------------------------------

    def record(self, table: str, name: RecordName) -> str:
        """A live commit-log file of ``table``."""
        return self._p("commits", table, name.file)

    def commit_archive(self, table: str, day: str = "") -> str:
        return self._p("commit-archive", table, f"{day}/" if day else "")

    def archived_record(self, table: str, name: RecordName, created: float) -> str:
        """Where a finished record's file goes: by the UTC day the record was created."""
        return self.commit_archive(table, day_of(created)) + name.file

    def by_table(self, store: ObjectStore, area: str) -> dict[str, list[StoredObject]]:
        """Everything under ``area`` (a prefix from :meth:`area`), per table, from one listing."""
        out: dict[str, list[StoredObject]] = {}
        for o in store.list_objects(area):
            out.setdefault(o.name[len(area) :].split("/")[0], []).append(o)
        return out
