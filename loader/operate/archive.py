"""The archive of loaded objects: its lifecycle in the bucket, and its size by storage class.

``PREFIX/archive/`` holds every object a load job loaded, which is what
``bqspool restore`` reloads from. The seed's plan: move it to COLDLINE
after 30 days; delete it after N days, by default never. The commit log's
archive (``commit-archive/``) is small and is what ``cost`` and the audit
read: no rule touches it.
"""

from __future__ import annotations

from ..config import Config
from ..interfaces import LifecycleRule, ObjectStore, StoredObject
from ..layout import Layout


def lifecycle_rules(config: Config, layout: Layout) -> list[LifecycleRule]:
    """The bucket lifecycle the configuration asks for."""
    prefix = layout.area("archive")
    rules = [LifecycleRule("set-storage-class", config.archive_coldline_days, prefix, "COLDLINE")]
    if config.archive_delete_days:
        rules.append(LifecycleRule("delete", config.archive_delete_days, prefix))
    return rules


def apply_lifecycle(store: ObjectStore, config: Config, layout: Layout) -> tuple[list[LifecycleRule], bool]:
    """Set the archive's lifecycle; the rules, and whether the bucket kept them
    (fake-gcs-server accepts lifecycle rules and forgets them)."""
    rules = lifecycle_rules(config, layout)
    kept = store.set_lifecycle(rules)
    return rules, sorted(map(str, kept)) == sorted(map(str, rules))


def archive_files(store: ObjectStore, layout: Layout) -> list[StoredObject]:
    """Every file of the archive (one listing of it)."""
    return store.list_objects(layout.area("archive"))


def archive_sizes(files: list[StoredObject], layout: Layout) -> dict[str, dict[str, dict[str, int]]]:
    """``{table: {storage_class: {"objects", "bytes"}}}`` of archive ``files``."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    root = layout.area("archive")
    for o in files:
        table = o.name[len(root) :].split("/")[0]
        slot = out.setdefault(table, {}).setdefault(o.storage_class, {"objects": 0, "bytes": 0})
        slot["objects"] += 1
        slot["bytes"] += o.size
    return out


def archive_size(store: ObjectStore, layout: Layout) -> dict[str, dict[str, dict[str, int]]]:
    """``{table: {storage_class: {"objects", "bytes"}}}`` of the archive."""
    return archive_sizes(archive_files(store, layout), layout)


def by_class(sizes: dict[str, dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """``archive_size``'s figures summed over tables: ``{storage_class: {"objects", "bytes"}}``."""
    out: dict[str, dict[str, int]] = {}
    for per_table in sizes.values():
        for cls, size in per_table.items():
            slot = out.setdefault(cls, {"objects": 0, "bytes": 0})
            slot["objects"] += size["objects"]
            slot["bytes"] += size["bytes"]
    return out
