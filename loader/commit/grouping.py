"""How a commit groups the free staged objects into load jobs, and what it knows of each.

Pure functions of the commit log and the objects' names: which objects a
commit took on (:func:`eligible`), which load alone and which together
(:func:`groups`), and what their ships spent (:func:`ship_ops`).
"""

from __future__ import annotations

from collections.abc import Iterable

from .. import billing
from ..interfaces import StoredObject
from ..layout import ObjectName
from .commitlog import TableLog


def groups(tlog: TableLog, free: list[str], per_job: int) -> list[list[str]]:
    """``free`` objects in groups of ``per_job``, except those that load alone:
    halves of a rejected object, and objects of a group a job rejected. Restored
    copies group apart from shipped batches, so an archive file holds either."""
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
        groups += [shared[i : i + per_job] for i in range(0, len(shared), per_job)]
    return groups


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
