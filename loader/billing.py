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

import contextlib
import contextvars
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, TypeVar

T = TypeVar("T")

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


OPS_KEY = "bqspool-ops"  # an object's metadata: the requests its ship spent (encode_ops)
SHIP = "~ship"  # the tag of the ship stage's requests
SHARED = "~commit"  # the tag of a commit's requests that serve every table (the lease, listings)

_TAG: contextvars.ContextVar[str | None] = contextvars.ContextVar("bqspool_billing_tag", default=None)


@contextlib.contextmanager
def spending(tag: str) -> Iterator[None]:
    """Count the requests this thread sends inside the block under ``tag`` (a
    table, :data:`SHIP` or :data:`SHARED`), so that they can be put down to it."""
    token = _TAG.set(tag)
    try:
        yield
    finally:
        _TAG.reset(token)


def keeping_tag(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn``, run under the caller's tag in whatever thread calls it (a pool's)."""
    tag = _TAG.get()
    if tag is None:
        return fn

    def run(*args: Any) -> T:
        with spending(tag):
            return fn(*args)

    return run


class RequestCounts:
    """Requests an adapter sent, by operation; safe to use from many threads.

    Beside the running totals (:meth:`snapshot`), each request waits under
    the tag it was sent with (:func:`spending`) until someone :meth:`take` s
    it to record it: a ship records its requests in the objects it uploads,
    a committer in the records it closes (docs/operations.md, "What bqspool
    costs"). A request is recorded once: taking it empties its tag."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._pending: dict[str | None, Counter[str]] = {}
        self._lock = threading.Lock()

    def add(self, op: str, n: int = 1) -> None:
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r} (known: {', '.join(OPERATIONS)})")
        tag = _TAG.get()
        with self._lock:
            self._counts[op] += n
            self._pending.setdefault(tag, Counter())[op] += n

    def snapshot(self) -> dict[str, int]:
        """The counts so far, by operation."""
        with self._lock:
            return dict(self._counts)

    def since(self, before: Mapping[str, int]) -> dict[str, int]:
        """What was sent since ``before`` (a :meth:`snapshot`), by operation."""
        now = self.snapshot()
        return {op: n - before.get(op, 0) for op, n in now.items() if n - before.get(op, 0)}

    def take(self, *tags: str | None) -> dict[str, int]:
        """What was sent under ``tags`` and not taken yet, by operation; taking it
        empties those tags. A request paid ahead (:meth:`prepay`) is left out."""
        out: dict[str, int] = {}
        with self._lock:
            for tag in tags:
                add_ops(out, self._pending.pop(tag, Counter()))
        return {op: n for op, n in out.items() if n}

    def untaken(self) -> dict[str | None, dict[str, int]]:
        """Everything not taken yet, by tag (what a committer carries over)."""
        with self._lock:
            return {tag: dict(c) for tag, c in self._pending.items() if any(c.values())}

    def give_back(self, tag: str | None, ops: Mapping[str, int]) -> None:
        """Put ``ops`` taken from ``tag`` back, unrecorded (the write that was to record them failed)."""
        self.prepay(tag, {op: -n for op, n in ops.items()})

    def prepay(self, tag: str | None, ops: Mapping[str, int]) -> None:
        """``ops`` under ``tag`` are recorded already, before they are sent (a
        summary counts its own insert): when they are sent, they are not taken again."""
        with self._lock:
            pending = self._pending.setdefault(tag, Counter())
            for op, n in ops.items():
                pending[op] -= n


def add_ops(into: dict[str, int], more: Mapping[str, int]) -> dict[str, int]:
    """Add ``more`` into ``into`` (operation counts); returns ``into``."""
    for op, n in more.items():
        into[op] = into.get(op, 0) + n
    return into


def encode_ops(ops: Mapping[str, int]) -> str:
    """Operation counts as text for an object's metadata: ``insert=1,get=2``."""
    return ",".join(f"{op}={n}" for op, n in sorted(ops.items()) if n)


_COUNT = re.compile(r"[0-9]{1,15}")  # ASCII digits only: str.isdigit() takes any script's


def decode_ops(text: str | None) -> dict[str, int]:
    """The counts :func:`encode_ops` wrote; what is not a known operation with a
    count is left out (the counts are the bill's, never the data's)."""
    out: dict[str, int] = {}
    for part in (text or "").split(","):
        op, _, n = part.partition("=")
        if op in OPERATIONS and _COUNT.fullmatch(n):
            out[op] = out.get(op, 0) + int(n)
    return out


def describe(ops: Mapping[str, int]) -> str:
    """A report line's part about requests: ``3 class A, 1 class B requests``
    (with the BigQuery API calls, if any)."""
    c = by_class(ops)
    text = f"{c['class_a']} class A, {c['class_b']} class B requests"
    return text + (f", {c['bigquery']} BigQuery API calls" if c["bigquery"] else "")


def checked_ops(found: object) -> dict[str, int]:
    """Operation counts read back from JSON: known operations with whole counts only."""
    if not isinstance(found, Mapping):
        return {}
    return {
        op: n
        for op, n in found.items()
        if op in OPERATIONS and type(n) is int and n > 0  # a bool is no count
    }
