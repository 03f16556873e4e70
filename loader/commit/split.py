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

from bqspool.schemas.errors import PreconditionFailedError

from .commitlog import Layout
from .interfaces import ObjectStore

DEAD, SPLIT, QUARANTINE = "dead", "split", "quarantine"


def root_of(name: str) -> str:
    """The shipped object a part was split from (itself if it is no part)."""
    folder, _, file = name.rpartition("/")
    return f"{folder}/{file.partition('~')[0].removesuffix('.parquet')}.parquet"


def halves(name: str, first: int, second: int) -> tuple[str, str]:
    """The names of ``name``'s halves, with their numbers of events."""
    stem = name.removesuffix(".parquet")
    return f"{stem}~a{first}.parquet", f"{stem}~b{second}.parquet"


def sibling_prefix(name: str) -> str:
    """What the name of the other half of ``name``'s parent starts with."""
    stem, _, last = name.removesuffix(".parquet").rpartition("~")
    return f"{stem}~{'b' if last.startswith('a') else 'a'}"


def exists(store: ObjectStore, name: str) -> bool:
    return any(o.name == name for o in store.list_objects(name))


def write_reason(store: ObjectStore, name: str, text: str) -> None:
    try:
        store.write_object(name, text.encode(), 0)
    except PreconditionFailedError:
        pass  # written by an earlier attempt: reasons never change


class Splitter:
    """What the committer does with an object a load job rejected alone."""

    def __init__(self, store: ObjectStore, layout: Layout):
        self.store, self.layout = store, layout

    def reason_name(self, name: str, area: str) -> str:
        return self.layout.moved(name, area) + ".reason"

    def quarantine_under_way(self, src: str) -> bool:
        return exists(self.store, self.reason_name(root_of(src), QUARANTINE))

    def whole_rejected(self, src: str, rejected: set[str]) -> bool:
        """Both halves of a shipped object rejected (the other now, in ``rejected``, or
        before, in ``split/``), and none of its rows loaded yet."""
        if src.count("~") != 1:
            return False
        other = sibling_prefix(src)
        rejected_now = any(r.startswith(other) for r in rejected)
        if not rejected_now and not self.store.list_objects(self.layout.moved(other, SPLIT)):
            return False
        loaded = self.layout.moved(root_of(src), "archive").removesuffix(".parquet") + "~"
        return not self.store.list_objects(loaded)

    def narrow(self, src: str, reason: str) -> str:
        """Deal with ``src``, rejected alone, from one download of it: ``"unreadable"``
        (no Parquet file: quarantined), ``"dead"`` (one event: a dead letter) or
        ``"split"`` (its halves uploaded to ``staged/``, it moved to ``split/``)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .stage import write_rows

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
            a, b = halves(src, mid, table.num_rows - mid)
            for name, part in ((a, table.slice(0, mid)), (b, table.slice(mid))):
                out = Path(tmp) / "part.parquet"
                write_rows(part, out)
                self.store.upload(name, out)
        self.store.move_object(src, self.layout.moved(src, SPLIT))
        return "split"

    def dead_letter(self, src: str, reason: str) -> None:
        write_reason(self.store, self.reason_name(src, DEAD), reason)
        self.store.move_object(src, self.layout.moved(src, DEAD))

    def quarantine_one(self, src: str, reason: str) -> None:
        write_reason(self.store, self.reason_name(src, QUARANTINE), reason)
        self.store.move_object(src, self.layout.moved(src, QUARANTINE))

    def quarantine_whole(self, src: str, reason: str, staged: dict) -> str:
        """Quarantine ``src``'s shipped object whole; park its parts. Safe to repeat."""
        root = root_of(src)
        write_reason(self.store, self.reason_name(root, QUARANTINE), reason)
        stem = root.removesuffix(".parquet") + "~"
        for o in self.store.list_objects(stem):  # halves staged in this round too, not only the listed ones
            self.store.move_object(o.name, self.layout.moved(o.name, SPLIT))
            staged.pop(o.name, None)
        if exists(self.store, self.layout.moved(root, SPLIT)):
            self.store.move_object(self.layout.moved(root, SPLIT), self.layout.moved(root, QUARANTINE))
        return root
