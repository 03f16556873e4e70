"""Screening what is staged before it loads: strays and copies go to quarantine with a reason.

Anything may land in ``staged/``: a file someone dropped there, a name
with no day folder, a table name BigQuery would refuse, a table the schema
set does not have, or a real batch's bytes copied under another name. None
of it may stop a commit, and none of it may load twice. So, before a
commit groups objects into load jobs:

- a path the grammar does not hold (:meth:`~bqspool.loader.layout.Layout.parse`)
  moves to ``quarantine/~strays/`` (no table has that name), its path kept
  in its name;
- an object of a table the schema set lacks, or whose name is not one
  bqspool writes, moves to ``quarantine/TABLE/DAY/``;
- an object whose batch (the digest of its rows, and which half) is
  already staged under another name, claimed by a record, or in the
  archive of its seal day moves to ``quarantine/`` too: two objects with
  one digest are one batch, and it loads once.

Each keeps a ``.reason`` beside it; ``bqspool quarantine list`` shows them.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable

from bqspool.schemas.errors import PreconditionFailedError

from ..archived import archived_batches
from ..interfaces import ObjectStore
from ..layout import REASON, Layout, ObjectName

log = logging.getLogger("bqspool.loader")


class Screen:
    """Quarantines strays and copies for one committer (``tables``: the schema set's, or None for any)."""

    def __init__(self, objects: ObjectStore, layout: Layout, tables: Collection[str] | None):
        self.objects, self.layout, self.tables = objects, layout, tables
        self._archived: dict[tuple[str, str], dict[str, str]] = {}  # (table, day) -> batch key -> archive file

    def forget(self) -> None:
        """Drop what was read of the archive: another committer may have archived since."""
        self._archived.clear()

    def remember(self, table: str, day: str, keys: list[str], path: str) -> None:
        """An archive file this committer wrote: what was read of its day stays whole."""
        known = self._archived.get((table, day))
        if known is not None:
            known.update(dict.fromkeys(keys, path))

    def strays(self, names: Iterable[str]) -> list[str]:
        """Quarantine the paths the grammar does not hold; the ones quarantined."""
        out = []
        for path in names:
            why = "not a name bqspool writes (AREA/TABLE/DAY/FILE.parquet)"
            if self.layout.parse(path) is None and self._hold(path, self.layout.stray(path), why):
                out.append(path)
        return out

    def misfits(self, table: str, free: list[str], claimed: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
        """Of ``table``'s ``free`` objects: those that may load; those quarantined (of a
        table the schema set lacks, not a name bqspool writes, or a copy of a batch
        staged, ``claimed`` by a record, or archived); and those gone meanwhile (loaded
        and archived by another committer since the caller listed them)."""
        keep: list[str] = []
        held: list[str] = []
        gone: list[str] = []
        seen: dict[str, str] = {}
        for src in claimed:
            key = ObjectName.of_file(src).batch_key
            if key:
                seen.setdefault(key, src)
        for src in sorted(free):
            why = self._why(table, src, seen)
            if why is None:
                keep.append(src)
            elif self._hold(src, self.layout.moved(src, "quarantine"), why):
                held.append(src)
            else:
                gone.append(src)
        return keep, held, gone

    def _why(self, table: str, src: str, seen: dict[str, str]) -> str | None:
        """Why ``src`` may not load, or None."""
        name = self.layout.name_of(src)
        # A restored copy may go to a table of its own (`restore --into`), which the restore created.
        if self.tables is not None and table not in self.tables and name.kind != "restored":
            return f"table {table} is not in the schema set: add it (then `bqspool setup`), then retry"
        if name.kind is None:
            return "not a name bqspool writes: a file put here by hand, or renamed"
        key = name.batch_key
        if key is None:
            return None  # an archive file or a restored copy: loaded as staged by `restore`
        other = seen.get(key) or self._archive(name).get(key)
        if other is not None and other != src:
            return f"holds the same batch as {other} (rows with digest {key}): a copy, not loaded twice"
        seen[key] = src
        return None

    def _archive(self, name: ObjectName) -> dict[str, str]:
        """The archive's batches of ``name``'s table and seal day (one listing per commit)."""
        at = (name.table, name.day)
        if at not in self._archived:
            self._archived[at] = archived_batches(self.objects, self.layout, name.table, name.day)
        return self._archived[at]

    def _hold(self, src: str, to: str, reason: str) -> bool:
        """Quarantine ``src`` with ``reason``; False if it is gone (and not held: another
        committer loaded and archived it since it was listed)."""
        if self.objects.stat(src) is None and self.objects.stat(to) is None:
            log.info("object %s is gone: another committer loaded and archived it meanwhile", src)
            return False
        try:
            self.objects.write_object(to + REASON, reason.encode(), 0)
        except PreconditionFailedError:
            pass  # written by an earlier attempt: reasons never change
        self.objects.move_object(src, to)
        log.error("object %s quarantined: %s; see `bqspool quarantine list`", src, reason)
        return True
