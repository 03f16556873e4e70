"""Words for counts in what bqspool prints: ``counted(1, "batch")`` is "1 batch", not "1 batches"."""

from __future__ import annotations

_IRREGULAR = {"batch": "batches", "query": "queries", "is": "are", "was": "were"}


def plural(n: int, word: str) -> str:
    """``word`` for ``n`` of it: the last word takes its plural when ``n`` is not 1."""
    if n == 1:
        return word
    head, _, last = word.rpartition(" ")
    many = _IRREGULAR.get(last, last + "s")
    return f"{head} {many}" if head else many


def counted(n: int, word: str) -> str:
    """``n`` and ``word`` as English says them: "1 event", "3 load jobs", "1,200 events"."""
    return f"{n:,} {plural(n, word)}"
