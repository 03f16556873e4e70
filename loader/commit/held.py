"""Objects the commit stage held back: list, retry and drop them.

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

from .commitlog import Layout
from .interfaces import ObjectStore

AREAS = ("quarantine", "dead")


@dataclass(frozen=True)
class Held:
    name: str  # as it was staged: what retry and drop take
    area: str
    size: int
    reason: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _staged_name(layout: Layout, held_name: str) -> str:
    table, day, file = layout.split(held_name)
    return layout.staged_name(table, day, file)


def held(store: ObjectStore, layout: Layout) -> list[Held]:
    out = []
    for area in AREAS:
        listed = store.list_objects(f"{layout.prefix.strip('/')}/{area}/")
        reasons = {o.name for o in listed if o.name.endswith(".reason")}
        for o in listed:
            if o.name.endswith(".reason"):
                continue
            found = store.read_object(o.name + ".reason") if o.name + ".reason" in reasons else None
            reason = found[0].decode("utf-8", "replace").strip() if found else "(no reason recorded)"
            out.append(Held(_staged_name(layout, o.name), area, o.size, reason))
    return out


def _find(store: ObjectStore, layout: Layout, names: list[str] | None) -> list[Held]:
    everything = held(store, layout)
    if names is None:
        return everything
    by_name = {h.name: h for h in everything}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise BackendError(f"not held back: {', '.join(unknown)} (see `bqspool quarantine list`)")
    return [by_name[n] for n in names]


def retry(store: ObjectStore, layout: Layout, names: list[str] | None = None) -> int:
    """Put held objects (all, or those named) back in ``staged/``; how many."""
    items = _find(store, layout, names)
    for h in items:
        reason = layout.moved(h.name, h.area) + ".reason"
        store.move_object(layout.moved(h.name, h.area), h.name)
        if (
            store.read_object(reason) is not None
        ):  # the reason goes with the hold: a new one is written if it fails again
            store.move_object(reason, layout.moved(h.name, "retried") + ".reason")
    return len(items)


def drop(store: ObjectStore, layout: Layout, names: list[str]) -> int:
    """Give up on held objects: they move to ``dropped/``, never to be loaded; how many."""
    items = _find(store, layout, names)
    for h in items:
        reason = layout.moved(h.name, h.area) + ".reason"
        store.move_object(layout.moved(h.name, h.area), layout.moved(h.name, "dropped"))
        if store.read_object(reason) is not None:
            store.move_object(reason, layout.moved(h.name, "dropped") + ".reason")
    return len(items)
