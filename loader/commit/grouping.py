"""How a commit groups the free staged objects into load jobs, and what it knows of each.

Pure functions of the commit log and the objects' names: which objects a
commit took on (:func:`eligible`), which load alone and which together
(:func:`groups`), and what their ships spent (:func:`ship_ops`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .. import billing, partitions
from ..interfaces import StoredObject
from ..layout import ObjectName
from .commitlog import TableLog


def groups(
    tlog: TableLog,
    free: list[str],
    per_job: int,
    spans: Mapping[str, partitions.Span] | None = None,
    partitions_per_job: int = 4000,
) -> list[list[str]]:
    """``free`` objects in groups of ``per_job``, except those that load alone:
    halves of a rejected object, and objects of a group a job rejected. Restored
    copies group apart from shipped batches, so an archive file holds either.
    A group modifies at most ``partitions_per_job`` partitions, by ``spans``
    (an object missing from it: ``partitions.UNKNOWN``)."""
    rejected_together = {
        s
        for r in tlog.records.values()
        if tlog.outcome(r.key) == "failed-data" and len(r.sources) > 1
        for s in r.sources
    }
    solo = rejected_together | {n for n in free if ObjectName.of_file(n).is_half}
    groups = [[n] for n in free if n in solo]
    for restored in (False, True):
        shared = [n for n in free if n not in solo and (ObjectName.of_file(n).kind == "restored") == restored]
        groups += _fill(shared, per_job, spans or {}, partitions_per_job)
    return groups


def _fill(names: list[str], per_job: int, spans: Mapping[str, partitions.Span], limit: int) -> list[list[str]]:
    """``names`` in order, in groups of at most ``per_job`` objects and ``limit`` partitions
    (counted as ``partitions.Tally`` counts them)."""
    out: list[list[str]] = []
    group: list[str] = []
    tally = partitions.Tally()
    for n in names:
        span = spans.get(n, partitions.UNKNOWN)
        if group and (len(group) >= per_job or tally.with_(span) > limit):
            out.append(group)
            group, tally = [], partitions.Tally()
        group.append(n)
        tally.add(span)
    if group:
        out.append(group)
    return out


def ship_ops(objects: Iterable[StoredObject]) -> dict[str, int]:
    """What the ships of ``objects`` spent, from their metadata (see ``ship.delivery``)."""
    out: dict[str, int] = {}
    for o in objects:
        billing.add_ops(out, billing.decode_ops(o.metadata.get(billing.OPS_KEY)))
    return out


def eligible(name: str, eligible: set[str]) -> bool:
    """``name`` was staged when the commit began, or is a half (of a half...) of one that was."""
    folder = name.rpartition("/")[0]
    return any(f"{folder}/{n.file}" in eligible for n in ObjectName.of_file(name).lineage())
