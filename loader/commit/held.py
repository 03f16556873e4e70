"""Objects the commit stage held back in the bucket: list, retry and drop them.

Two areas of the bucket hold objects back, each object with a ``.reason``
beside it: ``quarantine/`` (a shipped object whose halves were both
rejected, or other bytes under our name) and ``dead/`` (one event a load
job rejected alone). Retrying moves an object back to ``staged/``, where
the next commit loads it alone; dropping moves it to ``dropped/``, where it
stays as a record (a host recovering from a crash looks there too, so a
dropped object is never shipped again). Run these while no committer runs,
or accept that a commit running meanwhile sees the result at its next round.
"""

from __future__ import annotations

from dataclasses import dataclass

from bqspool.schemas.errors import BackendError

from ..interfaces import ObjectStore
from ..layout import HELD, REASON, STRAYS, Layout, ObjectArea


@dataclass(frozen=True)
class HeldObject:
    name: str  # as it was staged: what retry and drop take
    table: str  # STRAYS for a path the grammar does not hold
    area: ObjectArea
    size: int
    reason: str
    at: str  # where it is held now

    @property
    def stray(self) -> bool:
        return self.table == STRAYS

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "at"}


def held_objects(store: ObjectStore, layout: Layout) -> list[HeldObject]:
    """Every object the bucket holds back, with its reason."""
    out = []
    for area in HELD:
        listed = store.list_objects(layout.area(area))
        reasons = {o.name for o in listed if o.name.endswith(REASON)}
        for o in listed:
            if o.name.endswith(REASON):
                continue
            found = layout.parse(o.name)
            staged = layout.path("staged", found[1]) if found else layout.unstray(o.name)
            if staged is None:  # a name bqspool did not write
                continue
            text = store.read_object(o.name + REASON) if o.name + REASON in reasons else None
            reason = text.data.decode("utf-8", "replace").strip() if text else "(no reason recorded)"
            table = found[1].table if found else STRAYS
            out.append(HeldObject(staged, table, area, o.size, reason, o.name))
    return out


def _find(store: ObjectStore, layout: Layout, names: list[str] | None) -> list[HeldObject]:
    everything = held_objects(store, layout)
    if names is None:
        return everything
    by_name = {h.name: h for h in everything}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise BackendError(f"not held back: {', '.join(unknown)} (see `bqspool quarantine list`)")
    return [by_name[n] for n in names]


def retry(store: ObjectStore, layout: Layout, names: list[str] | None = None) -> int:
    """Put held objects (all, or those named) back in ``staged/``; how many. A stray
    (a path the grammar does not hold) cannot load: retrying it by name is refused,
    and retrying everything leaves it where it is."""
    items = _find(store, layout, names)
    strays = [h.name for h in items if h.stray]
    if names is not None and strays:
        raise BackendError(
            f"{', '.join(strays)}: not a name bqspool loads, so it cannot be retried; "
            "`bqspool quarantine drop` it, or put its rows in a batch of your own"
        )
    items = [h for h in items if not h.stray]
    for h in items:
        reason = h.at + REASON
        store.move_object(h.at, h.name)
        if (
            store.read_object(reason) is not None
        ):  # the reason goes with the hold: a new one is written if it fails again
            store.move_object(reason, layout.reason(h.name, "retried"))
    return len(items)


def drop(store: ObjectStore, layout: Layout, names: list[str]) -> int:
    """Give up on held objects: they move to ``dropped/``, never to be loaded; how many."""
    items = _find(store, layout, names)
    for h in items:
        to = layout.stray(h.name, "dropped") if h.stray else layout.moved(h.name, "dropped")
        store.move_object(h.at, to)
        if store.read_object(h.at + REASON) is not None:
            store.move_object(h.at + REASON, to + REASON)
    return len(items)
