"""Archiving what a load job loaded: one Parquet file per record and seal day, then the objects go.

A done record's objects are read (class B), their rows written into one
archive file per seal day (``archive/TABLE/YYYY/MM/DD/KEY-PART-nEVENTS.parquet``,
one insert: class A), and the objects deleted (free). Moving each object
instead cost a copy (class A) per object: the archive doubled the bill.
The archive file is plain Parquet of the table, so ``bqspool restore``
loads it as it is, an operator can read it, and the lifecycle moves a few
big files to Coldline instead of many small ones.

Every source of the record is dealt with from the bucket, not from a
listing the committer took earlier: a record is closed only when each of
its objects is archived and deleted, or gone. An archive file is named
from the record alone, so a committer killed at any step finds it (a stat)
and carries on; its custom metadata lists the batches it holds (their
:attr:`~bqspool.loader.layout.ObjectName.batch_key`), so a copy of a batch
that was loaded is recognised as one (see :mod:`bqspool.loader.archived`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bqspool.schemas.errors import BackendError, ObjectConflictError

from .. import billing, faults
from ..archived import SOURCES_KEY
from ..interfaces import ObjectStore, StoredObject
from ..layout import Layout, ObjectName, day_of

log = logging.getLogger("bqspool.loader")

MAX_FILES = 256  # objects in one archive file
MAX_BYTES = 256 * 1024 * 1024  # and their bytes: what the committer holds on its disk at once
DOWNLOADS = 8  # objects read at once
MERGE_ROWS = 16_384  # rows read and written at once (an archive file's row groups)
# Characters of the batches' keys in the file's metadata: GCS allows 8 KiB in all, and
# fake-gcs-server keeps an object's attributes in one 4-KiB extended attribute of its file.
MAX_INDEX = 3000
# Objects merged ahead, while their load jobs run (see Archiver.prepare): at most
# this many bytes of them at once, on the committer's disk.
PREPARE_BYTES = 512 * 1024 * 1024
# Objects read into memory rather than onto disk: each at most SMALL bytes, at most
# IN_MEMORY bytes of a part's. A small object read from memory costs a third less
# CPU (no file written and opened twice), and most objects are small.
SMALL = 1024 * 1024
IN_MEMORY = 32 * 1024 * 1024


@dataclass(frozen=True)
class Part:
    """One archive file to write: its path, the objects whose rows it holds, and their seal day."""

    path: str
    sources: tuple[str, ...]
    day: str = ""
    sizes: tuple[int, ...] = ()  # the sources' bytes, in order, when known

    def in_memory(self) -> list[bool]:
        """Which sources are read into memory (see SMALL and IN_MEMORY); the rest go to disk."""
        left, out = IN_MEMORY, []
        for size in self.sizes or (SMALL + 1,) * len(self.sources):
            small = size <= min(SMALL, left)
            left -= size if small else 0
            out.append(small)
        return out


def plan(layout: Layout, table: str, key: str, created: float, sources: Mapping[str, int]) -> list[Part]:
    """The archive files of record ``key``: its objects (name -> size) by seal day,
    cut where a file would pass MAX_FILES, MAX_BYTES or MAX_INDEX. Deterministic:
    the same record always plans the same files."""
    by_day: dict[str, list[str]] = {}
    for src in sorted(sources):
        found = layout.parse(src)
        day = found[1].day if found else day_of(created)
        by_day.setdefault(day, []).append(src)
    parts: list[Part] = []
    for day, names in sorted(by_day.items()):
        chunk: list[str] = []
        size = index = 0
        for src in names:
            key_len = len(ObjectName.of_file(src).archive_key or "") + 1
            if chunk and (len(chunk) >= MAX_FILES or size + sources[src] > MAX_BYTES or index + key_len > MAX_INDEX):
                parts.append(_part(layout, table, day, key, len(parts), chunk, sources))
                chunk, size, index = [], 0, 0
            chunk.append(src)
            size += sources[src]
            index += key_len
        if chunk:
            parts.append(_part(layout, table, day, key, len(parts), chunk, sources))
    return parts


def _part(layout: Layout, table: str, day: str, key: str, i: int, chunk: list[str], sizes: Mapping[str, int]) -> Part:
    events = sum(ObjectName.of_file(s).events or 0 for s in chunk)
    path = layout.path("archive", ObjectName.archive_file(table, day, key, i, events))
    return Part(path, tuple(chunk), day, tuple(sizes[s] for s in chunk))


class Archiver:
    """Writes archive files and deletes what they hold; ``renew`` runs before each change,
    ``on_archived(table, day, keys, path)`` after each file is in the bucket."""

    def __init__(
        self,
        objects: ObjectStore,
        layout: Layout,
        renew: Callable[[], None],
        on_archived: Callable[[str, str, list[str], str], None] = lambda *a: None,
    ):
        self.objects, self.layout, self.renew, self.on_archived = objects, layout, renew, on_archived
        self._ready: dict[str, tuple[Future[Path | None], int]] = {}  # part path -> its merge, its bytes
        self._pool: ThreadPoolExecutor | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    def prepare(
        self, table: str, key: str, created: float, sources: tuple[str, ...], known: Mapping[str, StoredObject]
    ) -> None:
        """Start merging record ``key``'s objects into its archive files on local disk
        while its load job runs. Reads only (class B): nothing reaches the bucket
        before :meth:`archive`, which runs once the job is done; a job that fails
        wastes the reads, nothing else. Only objects in ``known`` (the commit's
        listing) are merged ahead, up to PREPARE_BYTES at once; the rest are merged
        when archived, as is a part whose merge failed."""
        if not all(s in known for s in sources):
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="bqspool-archive-ahead")
            self._scratch = tempfile.TemporaryDirectory(prefix="bqspool-archive-")
        assert self._scratch is not None
        for part in plan(self.layout, table, key, created, {s: known[s].size for s in sources}):
            size = sum(known[s].size for s in part.sources)
            if part.path in self._ready or sum(b for _, b in self._ready.values()) + size > PREPARE_BYTES:
                continue
            folder = Path(self._scratch.name) / str(len(self._ready))
            folder.mkdir(exist_ok=True)
            self._ready[part.path] = (self._pool.submit(billing.keeping_tag(self._merge), part, folder), size)

    def discard(self) -> None:
        """Drop what was merged ahead and not archived (a commit's end): its files go."""
        for future, _ in self._ready.values():
            future.cancel()
        self._ready.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._scratch is not None:
            self._scratch.cleanup()
        self._pool = self._scratch = None

    def archive(self, table: str, key: str, created: float, sources: Mapping[str, int]) -> list[str]:
        """Archive record ``key``'s objects (name -> size; see :func:`plan`), then delete
        them; the archive files. Safe to repeat after a crash at any point."""
        parts = plan(self.layout, table, key, created, sources)
        for part in parts:
            if self.objects.stat(part.path) is None:
                self._write(part)
                faults.hit("after_archive_write")
            self.on_archived(
                table, part.day, [k for s in part.sources if (k := ObjectName.of_file(s).archive_key)], part.path
            )
        self.renew()
        self.objects.delete_objects(list(sources))
        return [p.path for p in parts]

    def _write(self, part: Part) -> None:
        with tempfile.TemporaryDirectory(prefix="bqspool-archive-") as tmp:
            out = self._merged_ahead(part) or self._merge(part, Path(tmp))
            if out is None:
                return  # every object is gone: an earlier run archived and deleted them
            keys = [k for s in part.sources if (k := ObjectName.of_file(s).archive_key)]
            self.renew()
            try:
                self.objects.upload(part.path, out, {SOURCES_KEY: ",".join(keys)})
            except ObjectConflictError:
                pass  # written by an earlier attempt whose answer was lost: archived already

    def _merged_ahead(self, part: Part) -> Path | None:
        """The part's file, if :meth:`prepare` merged it; None to merge it now."""
        ready = self._ready.pop(part.path, None)
        if ready is None:
            return None
        try:
            return ready[0].result()
        except Exception as exc:  # a read that failed ahead: merged again, now, with its retries
            log.info("archiving %s: merging ahead failed (%s); merging it now", part.path, exc)
            return None

    def _merge(self, part: Part, folder: Path) -> Path | None:
        """The part's objects' rows in one Parquet file in ``folder``; None when every one is gone."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ..ship.stage import parquet_writer

        inputs = folder / "in"
        inputs.mkdir()
        files = self._download(part, inputs)
        if not files:
            return None
        # An object in memory is opened once, for its schema and its rows; one on disk
        # twice, so that one reader at a time holds its buffers.
        sources = [pq.ParquetFile(pa.BufferReader(f)) if isinstance(f, bytes) else f for f in files]
        schema = _unified([s.schema_arrow if isinstance(s, pq.ParquetFile) else pq.read_schema(s) for s in sources])
        out = folder / "archive.parquet"
        waiting: list[Any] = []  # small objects' rows, written together as one row group
        rows = 0
        with parquet_writer(out, schema) as writer:
            for source in sources:
                for table in _tables(source):
                    waiting.append(_aligned(table, schema))
                    rows += table.num_rows
                    if rows >= MERGE_ROWS:
                        writer.write_table(pa.concat_tables(waiting))
                        waiting, rows = [], 0
            if waiting:
                writer.write_table(pa.concat_tables(waiting))
        return out

    def _download(self, part: Part, folder: Path) -> list[bytes | Path]:
        """The part's objects, in order, each in memory or on local disk (see
        :meth:`Part.in_memory`); one that is gone is left out (said so)."""

        def one(i: int, src: str, small: bool) -> bytes | Path | None:
            path = folder / f"{i}.parquet"
            try:
                if small:
                    return self.objects.read_bytes(src)
                self.objects.download(src, path)
            except BackendError:
                if self.objects.stat(src) is not None:
                    raise
                log.warning("archiving %s: its object %s is gone already; archiving the rest", part.path, src)
                return None
            return path

        # Many small reads: side by side (the storage client keeps 10 connections a pool).
        with ThreadPoolExecutor(DOWNLOADS, thread_name_prefix="bqspool-archive") as pool:
            found = list(pool.map(billing.keeping_tag(one), range(len(part.sources)), part.sources, part.in_memory()))
        return [f for f in found if f is not None]


def _tables(source: Any) -> Iterator[Any]:
    """An object's rows (its open ParquetFile, or its file) as Arrow tables.

    Whole when it holds at most MERGE_ROWS rows: one read, since most objects
    are small and a reader's set-up is most of what reading a small one costs.
    Else a quarter of its row group at a time, one object open at a time, so
    the memory a merge takes stays flat however many objects the file holds
    (+40 MB, not +100 for 12)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with source if isinstance(source, pq.ParquetFile) else pq.ParquetFile(source) as pf:
        if pf.metadata.num_rows <= MERGE_ROWS:
            yield pf.read(use_threads=False)
            return
        for batch in pf.iter_batches(batch_size=MERGE_ROWS, use_threads=False):
            yield pa.Table.from_batches([batch])


def _unified(schemas: list[Any]) -> Any:
    """One schema for every object of a part: columns in the order first seen, a
    column some objects lack (written before it was added) nullable."""
    import pyarrow as pa

    fields: dict[str, pa.Field] = {}
    for schema in schemas:
        for f in schema:
            if f.name not in fields:
                fields[f.name] = f
    present = [set(s.names) for s in schemas]
    return pa.schema(
        [f if all(f.name in p for p in present) else f.with_nullable(True) for f in fields.values()],
        metadata=schemas[0].metadata,
    )


def _aligned(table: Any, schema: Any) -> Any:
    """``table`` with ``schema``'s columns in its order, nulls for those it lacks."""
    import pyarrow as pa

    if table.schema.equals(schema, check_metadata=False):
        return table.replace_schema_metadata(schema.metadata)
    columns = [
        table.column(f.name) if f.name in table.column_names else pa.nulls(table.num_rows, type=f.type) for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def sizes_of(objects: ObjectStore, sources: tuple[str, ...], known: Mapping[str, StoredObject]) -> dict[str, int]:
    """Each source's size: from ``known`` (a listing the caller has), else a stat; 0 for one that is gone."""
    out = {}
    for src in sources:
        found = known.get(src) or objects.stat(src)
        out[src] = found.size if found is not None else 0
    return out
