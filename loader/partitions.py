"""Which partitions an object's rows fall in, so that no load job modifies too many.

BigQuery rejects a load job that modifies more than 4,000 partitions
(``WarehouseLimits.partitions_per_job``), and a table holds at most 10,000.
A ship writes, in each object's metadata (:data:`KEY`), the partitions its
rows fall in, as BigQuery names them (``20261204`` for a day, ``2026120413``
for an hour, ``202612`` for a month, ``2026`` for a year, ``__NULL__`` and
``__UNPARTITIONED__``): all of them when they are few (:data:`LISTED`),
else only their count. The commit groups objects by it (:class:`Tally`)
and splits an object that alone spans more than a job may (:func:`cut`).

An object with no such metadata (an unpartitioned table's, one shipped
before the metadata existed, a restored copy) counts as one partition that
all such objects share: a job of them that BigQuery still rejects is
narrowed down like any rejected job.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa
    from bqspool.schemas.definition import Partitioning

    from .interfaces import StoredObject

KEY = "bqspool-partitions"
LISTED = 16  # partitions named one by one in the metadata; more are counted
_FORMAT = {"HOUR": "%Y%m%d%H", "DAY": "%Y%m%d", "MONTH": "%Y%m", "YEAR": "%Y"}
_UNIT = {"HOUR": "hour", "DAY": "day", "MONTH": "month", "YEAR": "year"}
# BigQuery's range for time partitions; rows outside it share __UNPARTITIONED__.
_FIRST, _LAST = dt.date(1960, 1, 1), dt.date(2159, 12, 31)


@dataclass(frozen=True)
class Span:
    """The partitions of one object: their count, and their names when listed."""

    count: int
    names: frozenset[str] | None = None  # None: only counted

    def encode(self) -> str:
        if self.names is not None:
            return ",".join(sorted(self.names))
        return f"{self.count} partitions"

    @classmethod
    def decode(cls, value: str | None) -> Span:
        """The span a metadata value says; :data:`UNKNOWN` when there is none."""
        if not value:
            return UNKNOWN
        if value.endswith(" partitions"):
            try:
                return cls(max(1, int(value.split()[0])))
            except ValueError:
                return UNKNOWN
        names = frozenset(value.split(","))
        return cls(len(names), names)

    @classmethod
    def of(cls, names: list[str]) -> Span:
        return cls(len(names), frozenset(names)) if len(names) <= LISTED else cls(len(names))


UNKNOWN = Span(1, frozenset({"(not recorded)"}))


def _name(value: object, unit: str) -> str:
    if value is None:
        return "__NULL__"
    day = value.date() if isinstance(value, dt.datetime) else value
    assert isinstance(day, dt.date)
    if not _FIRST <= day <= _LAST:
        return "__UNPARTITIONED__"
    return value.strftime(_FORMAT[unit])  # type: ignore[attr-defined]


def keys(rows: pa.Table, part: Partitioning) -> pa.Array:
    """Each row's partition as a sortable value: the partition column, truncated to the unit."""
    import pyarrow.compute as pc

    column = rows.column(part.field).combine_chunks()
    return pc.floor_temporal(column, unit=_UNIT[part.type])


def names(rows: pa.Table, part: Partitioning | None) -> list[str]:
    """The partitions ``rows`` fall in, by BigQuery's names, sorted."""
    import pyarrow.compute as pc

    if part is None:
        return ["__UNPARTITIONED__"] if rows.num_rows else []
    unit = part.type
    return sorted({_name(v, unit) for v in pc.unique(keys(rows, part)).to_pylist()})


def of_file(path: Path, part: Partitioning) -> Span:
    """The span of a Parquet file, reading its partition column alone."""
    import pyarrow.parquet as pq

    return Span.of(names(pq.read_table(path, columns=[part.field]), part))


class Tally:
    """At most how many partitions a job of the objects added so far modifies: the named
    ones counted once however many objects share them, the counted ones added up."""

    def __init__(self) -> None:
        self.named: set[str] = set()
        self.counted = 0

    @property
    def bound(self) -> int:
        return len(self.named) + self.counted

    def with_(self, span: Span) -> int:
        """The bound once ``span`` is added too."""
        return self.bound + (len(span.names - self.named) if span.names is not None else span.count)

    def add(self, span: Span) -> None:
        if span.names is not None:
            self.named |= span.names
        else:
            self.counted += span.count


def union_bound(spans: Iterable[Span]) -> int:
    """The :class:`Tally` bound of a job of objects with ``spans``."""
    tally = Tally()
    for span in spans:
        tally.add(span)
    return tally.bound


def cut(rows: pa.Table, part: Partitioning, limit: int) -> tuple[pa.Table, int]:
    """``rows`` sorted by partition (stable: the same rows give the same order), and where
    to cut them so that the first part holds ``limit`` partitions."""
    import pyarrow as pa
    import pyarrow.compute as pc

    k = keys(rows, part)
    ordered = rows.take(pc.sort_indices(pa.table({"k": k}), sort_keys=[("k", "ascending")]))
    counts = pc.value_counts(keys(ordered, part))  # in first-seen order: the sorted order
    seen: set[str] = set()
    at = 0
    for entry in counts.to_pylist():
        name = _name(entry["values"], part.type)
        if name not in seen and len(seen) == limit:
            return ordered, at
        seen.add(name)
        at += entry["counts"]
    return ordered, ordered.num_rows


def span_of(obj: StoredObject) -> Span:
    """A stored object's span, from its metadata."""
    return Span.decode(obj.metadata.get(KEY))


def spans(objects: Iterable[StoredObject]) -> Mapping[str, Span]:
    """The span of each stored object, by name."""
    return {o.name: span_of(o) for o in objects}
