"""Narrowing a rejected object down to the rows that caused it.

A load job is atomic: one value BigQuery cannot take (a GEOGRAPHY it cannot
parse, say) fails the whole job. The commit stage loads the objects of a
rejected group one by one; an object rejected alone is *split* into two
halves, ``STEM~aN`` and ``STEM~bM`` (N and M their events), each written deterministically (the same
rows give the same bytes, so a repeated split uploads the same objects) and
loaded alone; the object itself moves to ``split/``. A half that is rejected
is split again. An object of one row that is rejected is that event's
fault: it moves to ``dead/`` with BigQuery's reason beside it, a dead
letter. One bad row in n costs about 2 log2(n) small load jobs.

When both halves of a shipped object are rejected and none of its rows
has loaded, the rejection is not confined to a few rows (the table changed
under the committer, or bad rows are spread through it): the whole object
is quarantined with the reason, its halves parked in ``split/``, rather
than dead-letter everything one event at a time. The reason is written
first, so a committer killed midway finishes the quarantine next time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bqspool.schemas.errors import PreconditionFailedError

from .. import partitions
from ..interfaces import ObjectStore, StoredObject, find_object
from ..layout import Layout

if TYPE_CHECKING:
    import pyarrow as pa
    from bqspool.schemas.definition import Partitioning

Narrowed = Literal["unreadable", "dead", "split"]


def write_reason(store: ObjectStore, name: str, text: str) -> None:
    try:
        store.write_object(name, text.encode(), 0)
    except PreconditionFailedError:
        pass  # written by an earlier attempt: reasons never change


class Splitter:
    """What the committer does with an object a load job rejected alone."""

    def __init__(self, store: ObjectStore, layout: Layout):
        self.store, self.layout = store, layout
        self.partitioning: Mapping[str, Partitioning | None] = {}  # by table: the halves' metadata names them

    def _root(self, src: str) -> str:
        """The shipped object ``src`` (a half, perhaps) was split from."""
        return self.layout.path("staged", self.layout.name_of(src).root)

    def quarantine_under_way(self, src: str) -> bool:
        return find_object(self.store, self.layout.reason(self._root(src), "quarantine")) is not None

    def whole_rejected(self, src: str, rejected: set[str]) -> bool:
        """Both halves of a shipped object rejected (the other now, in ``rejected``, or
        before, in ``split/``), and none of its rows loaded yet."""
        name = self.layout.name_of(src)
        if name.parent is None or name.parent.is_half:
            return False
        folder = src.rpartition("/")[0]
        other = f"{folder}/{name.sibling_stem}"
        rejected_now = any(r.startswith(other) for r in rejected)
        split_area = self.layout.path("split", name).rpartition("/")[0]
        if not rejected_now and not self.store.list_objects(f"{split_area}/{name.sibling_stem}"):
            return False
        archived = self.layout.path("archive", name.root)
        return not self.store.list_objects(archived.removesuffix(".parquet") + "~")

    def narrow(self, src: str, reason: str) -> Narrowed:
        """Deal with ``src``, rejected alone, from one download of it: ``"unreadable"``
        (no Parquet file: quarantined), ``"dead"`` (one event: a dead letter) or
        ``"split"`` (its halves uploaded to ``staged/``, it moved to ``split/``)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with tempfile.TemporaryDirectory(prefix="bqspool-split-") as tmp:
            path = Path(tmp) / "o.parquet"
            self.store.download(src, path)
            try:
                table = pq.read_table(path)
            except (pa.ArrowException, OSError):  # someone else's bytes under our name
                self.quarantine_one(src, f"not a Parquet file bqspool can read, and {reason}")
                return "unreadable"
            if table.num_rows <= 1:
                self.dead_letter(src, reason)
                return "dead"
            self._halves(src, table, table.num_rows // 2, Path(tmp))
        self.store.move_object(src, self.layout.moved(src, "split"))
        return "split"

    def _halves(self, src: str, rows: pa.Table, mid: int, tmp: Path) -> list[StoredObject]:
        """Upload ``rows[:mid]`` and ``rows[mid:]`` as ``src``'s halves (in ``staged/``),
        each with the partitions its rows fall in."""
        from ..ship.stage import write_rows

        name = self.layout.name_of(src)
        part = self.partitioning.get(name.table)
        out = []
        for half, piece in zip(name.halves(mid, rows.num_rows - mid), (rows.slice(0, mid), rows.slice(mid))):
            path = tmp / "part.parquet"
            write_rows(piece, path)
            meta = {partitions.KEY: partitions.Span.of(partitions.names(piece, part)).encode()} if part else {}
            stored = self.store.upload(self.layout.path("staged", half), path, meta)
            out.append(replace(stored, metadata={**stored.metadata, **meta}))
        return out

    def spread(self, src: str, limit: int) -> list[StoredObject]:
        """Split ``src``, whose rows fall in more than ``limit`` partitions (a backfill),
        into its first ``limit`` partitions and the rest: not a rejection, so no event
        becomes a dead letter. The halves go to ``staged/`` (a half still too wide is
        spread in its turn), ``src`` to ``split/``; the same rows give the same halves,
        so a repeated spread uploads the same objects. Returns the halves."""
        import pyarrow.parquet as pq

        part = self.partitioning.get(self.layout.name_of(src).table)
        assert part is not None, "an unpartitioned table's loads touch one partition"
        with tempfile.TemporaryDirectory(prefix="bqspool-spread-") as tmp:
            path = Path(tmp) / "o.parquet"
            self.store.download(src, path)
            ordered, at = partitions.cut(pq.read_table(path), part, limit)
            halves = self._halves(src, ordered, at, Path(tmp))
        self.store.move_object(src, self.layout.moved(src, "split"))
        return halves

    def spread_wide(
        self, free: list[str], staged: dict[str, StoredObject], limit: int, renew: Callable[[], None]
    ) -> list[str]:
        """``free`` with each object wider than ``limit`` partitions replaced by its
        halves (and a wide half by its own), each name once: after a spread killed
        before its move, the halves are staged already. ``staged`` is kept up to date.
        A table whose partitioning the committer was not given is left as it is."""
        out: list[str] = []
        todo = list(dict.fromkeys(free))
        while todo:
            name = todo.pop(0)
            found = staged.get(name)
            wide = found is not None and partitions.span_of(found).count > limit
            if not wide or self.partitioning.get(self.layout.name_of(name).table) is None:
                out.append(name)
                continue
            renew()
            halves = self.spread(name, limit)
            del staged[name]
            staged.update((h.name, h) for h in halves)
            todo += [h.name for h in halves if h.name not in todo and h.name not in out]
        return out

    def dead_letter(self, src: str, reason: str) -> None:
        write_reason(self.store, self.layout.reason(src, "dead"), reason)
        self.store.move_object(src, self.layout.moved(src, "dead"))

    def quarantine_one(self, src: str, reason: str) -> None:
        write_reason(self.store, self.layout.reason(src, "quarantine"), reason)
        self.store.move_object(src, self.layout.moved(src, "quarantine"))

    def quarantine_whole(self, src: str, reason: str, staged: dict) -> str:
        """Quarantine ``src``'s shipped object whole; park its parts. Safe to repeat."""
        root = self._root(src)
        write_reason(self.store, self.layout.reason(root, "quarantine"), reason)
        for o in self.store.list_objects(root.removesuffix(".parquet") + "~"):  # halves staged this round too
            self.store.move_object(o.name, self.layout.moved(o.name, "split"))
            staged.pop(o.name, None)
        parked = self.layout.moved(root, "split")
        if find_object(self.store, parked) is not None:
            self.store.move_object(parked, self.layout.moved(root, "quarantine"))
        return root
