"""Run a schema set's named queries (see :mod:`bqspool.schemas.queries`) against the warehouse.

For an app's own ``/analytics`` endpoint::

    from bqspool.loader.queries import Analytics

    analytics = Analytics()                      # bqspool.toml / BQSPOOL_* settings
    rows = analytics.run("user-analytics", {"user_id": "123", "days": 30})

Rows come back as dicts of Python values; parameters are sent as BigQuery
query parameters, never formatted into the SQL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from bqspool.schemas.errors import ValidationError
from bqspool.schemas.queries import NamedQuery
from bqspool.schemas.registry import SchemaSet, load_schema_set

from ..config import Config
from ..config import load_config as _load_config
from ..interfaces import QueryParam, Warehouse


class Analytics:
    """The configured schema set's queries, run on the configured dataset."""

    def __init__(
        self, config: Config | None = None, *, schemas: SchemaSet | None = None, warehouse: Warehouse | None = None
    ):
        self.config = config or _load_config()
        if schemas is None:
            self.config.require("schemas")
            assert self.config.schemas is not None
            schemas = load_schema_set(self.config.schemas)
        self.schemas = schemas
        if warehouse is None:
            from ..clients import make_warehouse

            warehouse = make_warehouse(self.config, "query")
        self.warehouse = warehouse

    def query(self, name: str) -> NamedQuery:
        """The named query; ValidationError listing the set's queries if there is none."""
        found = self.schemas.queries.get(name)
        if found is None:
            known = ", ".join(sorted(self.schemas.queries)) or "none"
            raise ValidationError(f"schema set {self.schemas.name} has no query {name!r} (its queries: {known})")
        return found

    def run(self, name: str, params: Mapping[str, object] | None = None) -> list[dict]:
        """Run query ``name`` with ``params`` (strings are parsed by the declared type)."""
        q = self.query(name)
        values = q.values(params or {})
        return self.warehouse.query(q.sql, [QueryParam(p.name, p.type, values[p.name]) for p in q.params])


def view_name(query: NamedQuery) -> str:
    """The view of a parameterless query: its name with ``_`` for ``-``."""
    return query.name.replace("-", "_")


def qualified(sql: str, tables: list[str], project: str, dataset: str) -> str:
    """``sql`` with the set's bare table names after FROM or JOIN written out in
    full: a view has no default dataset to resolve them in."""
    for table in tables:

        def full(m: re.Match, table: str = table) -> str:
            return f"{m.group(1)}`{project}.{dataset}.{table}`"

        sql = re.sub(rf"(\b(?:FROM|JOIN)\s+){re.escape(table)}\b(?![.`])", full, sql, flags=re.IGNORECASE)
    return sql


def run_query(name: str, params: Mapping[str, object] | None = None, *, config: Config | None = None) -> list[dict]:
    """Run the configured schema set's query ``name`` once (see :class:`Analytics` to run many)."""
    return Analytics(config).run(name, params)
