"""bqspool's loader: ship buffers to Cloud Storage, commit them to BigQuery.

``Shipper`` (in-process shipping for apps) and ``load_config`` are here;
everything else is in its module. Imports are lazy, so ``import
bqspool.loader`` costs nothing until a name is used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Committer", "Drainer", "Shipper", "load_config"]

_WHERE = {"Shipper": "shipper", "load_config": "config", "Committer": "commit", "Drainer": "drain"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
