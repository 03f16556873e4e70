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
from pathlib import Path
from typing import Literal

from bqspool.schemas.errors import PreconditionFailedError

from ..interfaces import ObjectStore, find_object
from ..layout import Layout

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

        from ..ship.stage import write_rows

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
            mid = table.num_rows // 2
            a, b = self.layout.name_of(src).halves(mid, table.num_rows - mid)
            for half, part in ((a, table.slice(0, mid)), (b, table.slice(mid))):
                out = Path(tmp) / "part.parquet"
                write_rows(part, out)
                self.store.upload(self.layout.path("staged", half), out)
        self.store.move_object(src, self.layout.moved(src, "split"))
        return "split"

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
