"""The permissions each role needs: one table, which `bqspool doctor` tests and docs/deploy.md shows.

A host that ships creates objects, and reads and lists them when it
recovers from a crash; it never overwrites or deletes. The committer also
deletes and rewrites objects (the commit log, the lease, the archive) and
runs load jobs into the dataset's tables. tests/test_doctor.py checks that
docs/deploy.md names every permission here.
"""

from __future__ import annotations

SHIP_BUCKET = ("storage.objects.create", "storage.objects.get", "storage.objects.list")
COMMIT_BUCKET = (*SHIP_BUCKET, "storage.objects.delete", "storage.objects.update")
COMMIT_DATASET = ("bigquery.tables.get", "bigquery.tables.getData", "bigquery.tables.updateData")
COMMIT_PROJECT = ("bigquery.jobs.create",)

ROLES: dict[str, dict[str, tuple[str, ...]]] = {
    "ship": {"bucket": SHIP_BUCKET},
    "commit": {"bucket": COMMIT_BUCKET, "dataset": COMMIT_DATASET, "project": COMMIT_PROJECT},
}


def needed(role: str, on: str) -> tuple[str, ...]:
    """The permissions ``role`` ("ship", "commit" or "all") needs on ``on`` (bucket, dataset, project)."""
    roles = ("ship", "commit") if role == "all" else (role,)
    seen: dict[str, None] = {}
    for r in roles:
        for p in ROLES[r].get(on, ()):
            seen[p] = None
    return tuple(seen)
