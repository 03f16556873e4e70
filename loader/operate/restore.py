"""Restore: load archived objects of a time range back into a table that lacks them.

The archive (``PREFIX/archive/TABLE/YYYY/MM/DD/``, by the day each batch was
sealed) holds every object a load job loaded. A restore goes through the
same commit machinery as everything else:

1. select the archived objects of the days asked for (restored copies of an
   earlier restore are never selected again);
2. refuse, naming the batches, if the target already holds rows of any of
   them (checked by a sample of each object's ``_event_id`` values: a load
   job is atomic, so a batch is there whole or not at all, unless some of its
   partitions expired);
3. copy each into ``staged/TARGET/`` under a name of its own, deterministic
   from the restore's arguments (``...-rRESTORE-nEVENTS.parquet``);
4. commit: load jobs with deterministic ids, within the load-job budget and
   the pacing, exactly once. If another committer holds the lease, it loads
   them, and the restore waits and watches.

Killed and run again with the same arguments, it finds its copies (staged
or archived under ``TARGET``), skips them, and carries on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from bqspool.schemas.definition import EVENT_ID, TableDef
from bqspool.schemas.errors import ConfigError, LeaseHeldError, NotAvailableError, RestoreRefusedError
from bqspool.schemas.registry import SchemaSet

from .. import faults
from ..archived import SOURCES_KEY, archived_batches
from ..interfaces import ObjectStore, QueryParam, Warehouse
from ..layout import AFTER_STAGED, PARQUET, Layout, ObjectArea, ObjectName, events_in, is_table_name
from ..progress import Progress, tracked
from .history import days_between
from .verify import table_drift

log = logging.getLogger("bqspool.loader")

SAMPLE_IDS = 3  # per object: its first, middle and last event
IDS_PER_QUERY = 10_000


@dataclass
class RestoreReport:
    table: str
    target: str
    since: str
    until: str
    selected: int = 0  # archived objects in the range
    events: int = 0  # events they hold
    resumed: int = 0  # already copied by an earlier run of this restore
    copied: int = 0
    loaded_objects: int = 0  # restore objects in the target's archive now: loaded
    loaded_events: int = 0
    quarantined: list[str] = field(default_factory=list)
    created_table: bool = False
    committed_by: str = "this process"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def parse_day(text: str, today: dt.date) -> dt.date:
    """A day from ``YYYY-MM-DD``, an ISO time (its UTC day), ``today`` or ``Nd`` (N days ago)."""
    t = text.strip()
    if re.fullmatch(r"\d+d", t) and int(t[:-1]) > (today - dt.date.min).days:
        raise ConfigError(f"{text!r} reaches before year 1: give a number of days back to {dt.date.min}")
    try:
        if t == "today":
            return today
        if re.fullmatch(r"\d+d", t):
            return today - dt.timedelta(days=int(t[:-1]))
        if len(t) == 10:
            return dt.date.fromisoformat(t)
        stamp = dt.datetime.fromisoformat(t)
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).date()
    except ValueError:
        raise ConfigError(f"{text!r} is not a time: use YYYY-MM-DD, an ISO time, 'today' or Nd (days ago)") from None


def restore_id(table: str, target: str, since: dt.date, until: dt.date) -> str:
    return hashlib.sha256(f"{table}|{target}|{since}|{until}".encode()).hexdigest()[:10]


def restored_name(layout: Layout, archived: str, target: str, rid: str) -> str:
    """Where an archived object is staged again for restore ``rid`` into ``target``."""
    return layout.path("staged", layout.name_of(archived).restored(target, rid))


class Restore:
    """One restore of ``table``'s archive, days ``since`` to ``until``, into ``into`` (default: ``table``)."""

    def __init__(
        self,
        store: ObjectStore,
        warehouse: Warehouse,
        schemas: SchemaSet,
        layout: Layout,
        table: str,
        since: dt.date,
        until: dt.date,
        into: str | None = None,
        *,
        commit: Callable[[Callable[[list[str]], None]], object],
        progress: bool = True,
        poll_s: float = 5.0,
        wait_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if table not in schemas:
            raise ConfigError(f"schema set {schemas.name} has no table {table!r} (tables: {', '.join(schemas)})")
        target = into or table
        if not is_table_name(target):
            raise ConfigError(f"--into {target!r}: a table name has letters, digits and underscores")
        if target != table and target in schemas:
            raise ConfigError(f"--into {target}: that is another table of the schema set; name a new table")
        if since > until:
            raise ConfigError(f"--since {since} is after --until {until}")
        self.store, self.warehouse, self.schemas, self.layout = store, warehouse, schemas, layout
        self.table, self.target, self.since, self.until = table, target, since, until
        self.rid = restore_id(table, target, since, until)
        self.marker = f"-r{self.rid}-"  # in the name of each of this restore's copies
        self.commit = commit
        self.progress = progress
        self.poll_s, self.wait_s = poll_s, wait_s
        self.clock, self.sleep = clock, sleep

    def run(self) -> RestoreReport:
        report = RestoreReport(self.table, self.target, self.since.isoformat(), self.until.isoformat())
        report.created_table = self._prepare_target()
        sources = self._selected()
        report.selected = len(sources)
        report.events = sum(events_in(s) or 0 for s in sources)
        mine = self._copies()
        todo = [s for s in sources if restored_name(self.layout, s, self.target, self.rid) not in mine]
        report.resumed = len(sources) - len(todo)
        if todo:
            self._refuse_if_present(todo)
            report.copied = self._copy(todo)
        if sources:
            report.committed_by = self._load(sources)
        archived = self._in_area("archive")
        report.loaded_objects = len(archived)
        report.loaded_events = sum(events_in(n) or 0 for n in archived)
        report.quarantined = sorted(self._in_area("quarantine") | self._in_area("dead"))
        return report

    # -- steps ---------------------------------------------------------------------

    def _prepare_target(self) -> bool:
        """Create ``--into`` with the schema file's options, or check the target matches the schema file."""
        definition: TableDef = replace(self.schemas[self.table], name=self.target)
        have = self.warehouse.table_options(self.target)
        if have is None:
            if self.target == self.table:
                raise ConfigError(
                    f"table {self.table} does not exist: run `bqspool setup` to create it, then restore into it"
                )
            self.warehouse.ensure_table(definition)
            log.info("created table %s as the schema file of %s says", self.target, self.table)
            return True
        refused = [d for d in table_drift(definition, have) if d.fix is None]
        if refused:
            raise ConfigError(
                f"table {self.target} does not match the schema file of {self.table}: {refused[0]}; "
                "see `bqspool verify`"
            )
        return False

    def _selected(self) -> list[str]:
        """The archive's objects of the days asked for, but for what restores staged
        (a restored copy, or an archive file of restored copies only)."""
        out = []
        for day in days_between(self.since, self.until):
            prefix = f"{self.layout.area('archive', self.table)}{day.replace('-', '/')}/"
            for o in self.store.list_objects(prefix):
                found = self.layout.parse(o.name)
                held = [k for k in o.metadata.get(SOURCES_KEY, "").split(",") if k]
                restored = held and all(ObjectName.of_file(k + PARQUET).kind == "restored" for k in held)
                if found is not None and found[1].kind != "restored" and not restored:
                    out.append(o.name)
        return sorted(out)

    def _copies(self) -> set[str]:
        """The staged names of this restore's copies found anywhere under the target."""
        return set().union(*(self._in_area(area) for area in ("staged", *AFTER_STAGED)))

    def _in_area(self, area: ObjectArea) -> set[str]:
        """This restore's copies under ``area`` of the target, by their staged names. In the
        archive, by the archive files' lists of what they hold (see ``archived``)."""
        if area == "archive":
            held = archived_batches(self.store, self.layout, self.target)
            return {
                self.layout.path("staged", ObjectName(self.target, self.layout.name_of(f).day, f"{key}{PARQUET}"))
                for key, f in held.items()
                if self.marker in key + "-"
            }
        prefix = self.layout.area(area, self.target)
        found = (self.layout.parse(o.name) for o in self.store.list_objects(prefix) if self.marker in o.name)
        return {self.layout.path("staged", f[1]) for f in found if f is not None}

    def _refuse_if_present(self, sources: list[str]) -> None:
        """RestoreRefusedError if the target holds rows of any of ``sources``."""
        import pyarrow.parquet as pq

        sample: dict[str, str] = {}  # event id -> object
        with tempfile.TemporaryDirectory(prefix="bqspool-restore-") as tmp:
            for i, name in enumerate(self._bar(sources, "checking")):
                path = Path(tmp) / f"{i}.parquet"
                self.store.download(name, path)
                ids = pq.read_table(path, columns=[EVENT_ID]).column(0).to_pylist()
                path.unlink()
                for at in sorted({0, len(ids) // 2, len(ids) - 1}) if ids else ():
                    sample[ids[at]] = name
        present = self._present(list(sample))
        if present:
            batches = sorted({sample[i] for i in present})
            raise RestoreRefusedError(
                f"table {self.target} already holds rows of {len(batches)} of the {len(sources)} archive files "
                f"to restore (for example {batches[0].rpartition('/')[2]}): restoring them would load them twice. "
                f"Restore into a new table with --into NAME, or narrow --since/--until to days it lacks"
            )

    def _present(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        try:
            for i in range(0, len(ids), IDS_PER_QUERY):
                chunk = ids[i : i + IDS_PER_QUERY]
                rows = self.warehouse.query(
                    f"SELECT DISTINCT `{EVENT_ID}` AS id FROM `{self.target}` WHERE `{EVENT_ID}` IN UNNEST(@ids)",
                    [QueryParam("ids", "STRING", chunk)],
                )
                found |= {r["id"] for r in rows}
        except NotAvailableError:  # a backend without SQL: read the table
            wanted = set(ids)
            found = {r[EVENT_ID] for r in self.warehouse.fetch_rows(self.target) if r[EVENT_ID] in wanted}
        return found

    def _copy(self, sources: list[str]) -> int:
        def one(name: str) -> bool:
            copied = self.store.copy_object(name, restored_name(self.layout, name, self.target, self.rid))
            faults.hit("after_restore_copy")
            return copied

        with ThreadPoolExecutor(8, thread_name_prefix="bqspool-restore") as pool:
            return sum(1 for copied in self._bar(pool.map(one, sources), "copying", len(sources)) if copied)

    def _load(self, sources: list[str]) -> str:
        """Commit the copies. While another committer holds the lease, wait and take
        it when it frees (a running commit only loads what was staged when it
        began), up to ``wait_s``; then LeaseHeldError saying what is left to do."""
        bar = self._new_bar(len(sources), "loading")
        bar.advance(len(self._in_area("archive")))

        def on_loaded(names: list[str]) -> None:
            bar.advance(sum(1 for n in names if self.marker in n))

        deadline, waited = self.clock() + self.wait_s, False
        try:
            while True:
                try:
                    self.commit(on_loaded)
                    return "this process" if not waited else "this process, after another committer's lease"
                except LeaseHeldError as exc:
                    if self.clock() >= deadline:
                        raise LeaseHeldError(
                            f"restore: another committer kept the lease for {self.wait_s:.0f}s ({exc}). The "
                            f"restored objects are staged under {self.target}: the next commit loads them; run "
                            "this restore again to see them loaded"
                        ) from exc
                    if not waited:
                        log.warning(
                            "another committer is running (%s); waiting to take its lease, up to %.0fs",
                            exc,
                            self.wait_s,
                        )
                    waited = True
                    self.sleep(self.poll_s)
        finally:
            bar.close()

    def _new_bar(self, total: int, what: str) -> Progress:
        return Progress(total, self.progress, what=f"restore: {what}", unit="objects")

    def _bar(self, items, what: str, total: int | None = None):
        count = total if total is not None else len(items)
        return tracked(items, count, self.progress, what=f"restore: {what}", unit="objects")
