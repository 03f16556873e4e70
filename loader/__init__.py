"""bqspool's loader: ship buffers to Cloud Storage, commit them to BigQuery.

The packages follow the architecture (docs/architecture.md):

- :mod:`.ship`: this host's buffer -> objects in the bucket (every host);
- :mod:`.commit`: objects in the bucket -> load jobs, exactly once (once per dataset);
- :mod:`.backends`: Google Cloud Storage and BigQuery, the local stack, webhooks;
  the only modules that import Google's or an HTTP client library;
- :mod:`.operate`: history, verify, audit, restore, archive, cost, queries, status;
- :mod:`.watch`: the alert rules, the monitoring cycle, the status page, metrics;
- :mod:`.cli`: the ``bqspool`` command;
- here: the interfaces, the bucket's layout, configuration and settings,
  the drain (ship then commit), retries, scheduling, logs and progress.

``Shipper`` (in-process shipping for apps), ``load_config``, ``Drainer``,
``Committer`` and ``Analytics`` are importable from here. Imports are
lazy, so ``import bqspool.loader`` costs nothing until a name is used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Analytics", "Committer", "Drainer", "Shipper", "load_config"]

_WHERE = {
    "Shipper": "ship.shipper",
    "load_config": "config",
    "Committer": "commit.committer",
    "Drainer": "drain",
    "Analytics": "operate.queries",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
