"""What the backends' requests cost: each request counted by the operation it is, and its billing class.

Cloud Storage bills operations by class: class A (insert, copy, rewrite,
compose, list, patch) at ``price.gcs_class_a_per_1000``, class B (get,
metadata) at ``price.gcs_class_b_per_1000``; deletes are free. A batch
request is billed per call in it, a listing per page, a completed
resumable upload as one insert, and a retried request as often as it was
sent. BigQuery's load jobs are free; its job inserts, job lookups and
queries are counted beside, for quotas and the query bill.

Each adapter counts what it sends, exactly as it sends it, into a
:class:`RequestCounts`; the ship and commit reports carry the counts of
their stage, and the commit log keeps them for ``bqspool cost``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from typing import Literal

BillingClass = Literal["A", "B", "free", "bigquery"]

# Every operation an adapter may count, and its class.
OPERATIONS: dict[str, BillingClass] = {
    "insert": "A",
    "list": "A",
    "copy": "A",
    "rewrite": "A",
    "compose": "A",
    "patch": "A",
    "get": "B",
    "read": "B",
    "delete": "free",
    "job_insert": "bigquery",
    "job_lookup": "bigquery",
    "query": "bigquery",
    "table_admin": "bigquery",
}


def by_class(ops: Mapping[str, int]) -> dict[str, int]:
    """Operation counts summed by billing class: ``class_a``, ``class_b``, ``free``, ``bigquery``."""
    out = {"class_a": 0, "class_b": 0, "free": 0, "bigquery": 0}
    for op, n in ops.items():
        cls = OPERATIONS.get(op, "A")  # an operation not named here is billed as the dearest
        key = {"A": "class_a", "B": "class_b"}.get(cls, cls)
        out[key] += n
    return out


def usd(ops: Mapping[str, int], class_a_per_1000: float, class_b_per_1000: float) -> float:
    """What ``ops`` cost at the given prices (deletes and BigQuery's job calls are free)."""
    c = by_class(ops)
    return c["class_a"] / 1000 * class_a_per_1000 + c["class_b"] / 1000 * class_b_per_1000


class RequestCounts:
    """Requests an adapter sent, by operation; safe to use from many threads."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, op: str, n: int = 1) -> None:
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r} (known: {', '.join(OPERATIONS)})")
        with self._lock:
            self._counts[op] += n

    def snapshot(self) -> dict[str, int]:
        """The counts so far, by operation."""
        with self._lock:
            return dict(self._counts)

    def since(self, before: Mapping[str, int]) -> dict[str, int]:
        """What was sent since ``before`` (a :meth:`snapshot`), by operation."""
        now = self.snapshot()
        return {op: n - before.get(op, 0) for op, n in now.items() if n - before.get(op, 0)}


def add_ops(into: dict[str, int], more: Mapping[str, int]) -> dict[str, int]:
    """Add ``more`` into ``into`` (operation counts); returns ``into``."""
    for op, n in more.items():
        into[op] = into.get(op, 0) + n
    return into
