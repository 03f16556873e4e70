"""What the archive holds: which batches' rows, by table and seal day, from one listing.

An archive file (``commit/archiver.py``) lists the objects it holds in its
custom metadata, by their :attr:`~.layout.ObjectName.archive_key` (a
batch's digest and half; a restored copy's name); an object archived whole
by an earlier version is named as itself. Both are read from one listing of
``archive/TABLE/YYYY/MM/DD/`` (metadata included), which is how a
committer tells a copy of a loaded batch, a host recovering from a crash a
batch that was loaded since it uploaded it, and a restore the copies it
already loaded.
"""

from __future__ import annotations

from .interfaces import ObjectStore, find_object
from .layout import AFTER_STAGED, Layout, ObjectName

SOURCES_KEY = "bqspool-objects"  # an archive file's metadata: the archive keys it holds, comma-separated


def archived_batches(store: ObjectStore, layout: Layout, table: str, day: str | None = None) -> dict[str, str]:
    """Archive key -> the archive object holding its rows, for ``table``'s seal day
    ``day`` (every day when None: a listing of the table's whole archive)."""
    if day is None:
        folder = layout.area("archive", table)
    else:
        folder = layout.path("archive", ObjectName(table, day, "")).rstrip("/") + "/"
    out: dict[str, str] = {}
    for o in store.list_objects(folder):
        key = ObjectName.of_file(o.name).archive_key
        if key:  # archived whole, by an earlier version
            out[key] = o.name
        for key in filter(None, o.metadata.get(SOURCES_KEY, "").split(",")):
            out[key] = o.name
    return out


def already_handed_over(store: ObjectStore, layout: Layout, name: str) -> bool:
    """Whether a shipped object ``name`` is anywhere in the bucket: staged, moved
    to another area, or loaded and archived.

    Checked in this order on purpose: a move copies before it deletes, and
    the committer writes an archive file before it deletes the objects it
    holds, so an object gone from ``staged/`` is already where it went.
    """
    where = (name, *(layout.moved(name, area) for area in AFTER_STAGED))
    if any(find_object(store, w) is not None for w in where):
        return True
    shipped = layout.name_of(name)
    key = shipped.batch_key
    return key is not None and key in archived_batches(store, layout, shipped.table, shipped.day)
