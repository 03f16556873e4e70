"""The labels every BigQuery job bqspool starts carries, so its own jobs can be found and billed.

``bqspool`` (the version), ``bqspool_role`` (commit, restore, verify, query),
``bqspool_prefix`` and, for a load job, ``bqspool_table``; each value made
to fit BigQuery's label rules (lowercase letters, digits, ``_`` and ``-``,
at most 63 characters). docs/operations.md gives the INFORMATION_SCHEMA
query that lists them.
"""

from __future__ import annotations

import re
from importlib import metadata

MAX = 63


def label_value(text: str) -> str:
    """``text`` as a label value: lowercase, other characters as ``-``, at most 63 long."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:MAX]


def version() -> str:
    try:
        return metadata.version("bqspool")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def job_labels(role: str, prefix: str, table: str | None = None) -> dict[str, str]:
    """The labels of a job of ``role`` under ``prefix`` (and into ``table``)."""
    out = {"bqspool": label_value(version()), "bqspool_role": label_value(role), "bqspool_prefix": label_value(prefix)}
    if table:
        out["bqspool_table"] = label_value(table)
    return out


def load_labels(labels: dict[str, str], table: str) -> dict[str, str]:
    """A load job's labels: the warehouse's, and the table it loads."""
    return {**labels, "bqspool_table": label_value(table)}
