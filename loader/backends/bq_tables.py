"""BigQuery datasets and tables: the setup half of the BigQuery adapter."""

from __future__ import annotations

from typing import Any

from bqspool.schemas.bigquery import schema_to_json
from bqspool.schemas.definition import Field, TableDef
from bqspool.schemas.errors import SetupError
from google.api_core import exceptions as gexc


def fetch_table(client: Any, retry: Any, ref: str):
    """The table (or view) ``ref``, or None if there is none."""

    def attempt():
        try:
            return client.get_table(ref, retry=None, timeout=30)
        except gexc.NotFound:
            return None

    return retry.call(f"get table {ref}", attempt)


class TablesMixin:
    """Dataset and table setup for :class:`~.bq.BigQueryWarehouse` (which provides
    ``client``, ``project``, ``dataset``, ``location``, ``retry`` and ``table_ref``)."""

    client: Any
    project: str
    dataset: str
    location: str
    retry: Any
    query: Any  # from QueriesMixin
    kms_key: str | None = None  # set by BigQueryWarehouse: new tables are created with it

    def table_ref(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    def ensure_dataset(self) -> bool:
        from google.cloud import bigquery

        def attempt() -> bool:
            try:
                self.client.get_dataset(f"{self.project}.{self.dataset}", retry=None, timeout=30)
                return False
            except gexc.NotFound:
                ds = bigquery.Dataset(f"{self.project}.{self.dataset}")
                ds.location = self.location
                self.client.create_dataset(ds, exists_ok=True, retry=None, timeout=30)
                return True

        return self.retry.call(f"create dataset {self.dataset}", attempt)

    def ensure_table(self, table: TableDef) -> list[str]:
        """Create the table, or add its new NULLABLE columns; returns what changed.

        Raises SetupError listing every difference it cannot make.
        """
        from google.cloud import bigquery

        ref = self.table_ref(table.name)
        existing = fetch_table(self.client, self.retry, ref)
        if existing is None:
            body = bigquery.Table(ref, schema=[bigquery.SchemaField.from_api_repr(f) for f in schema_to_json(table)])
            if table.description:
                body.description = table.description
            if table.partitioning:
                p = table.partitioning
                body.time_partitioning = bigquery.TimePartitioning(
                    type_=p.type,
                    field=p.field,
                    expiration_ms=int(p.expiration_days * 86_400_000) if p.expiration_days else None,
                )
                body.require_partition_filter = p.require_partition_filter or None
            if table.clustering:
                body.clustering_fields = list(table.clustering)
            if table.labels:
                body.labels = dict(table.labels)
            if key := table.kms_key or self.kms_key:
                body.encryption_configuration = bigquery.EncryptionConfiguration(kms_key_name=key)
            self.retry.call(
                f"create table {ref}", lambda: self.client.create_table(body, exists_ok=True, retry=None, timeout=30)
            )
            return [f"created table {table.name}"]
        have = {f.name.lower(): f for f in self._stored_columns(ref)}
        modes = {f.name.lower(): f.mode for f in existing.schema}
        problems, additions = [], []
        for f in table.fields:
            cur = have.get(f.name.lower())
            if cur is None:
                if f.required:
                    problems.append(f"{table.name}.{f.name}: a new REQUIRED column cannot be added; make it NULLABLE")
                else:
                    additions.append(f)
                continue
            problems += _differences(table.name, f, cur, modes.get(f.name.lower()))
        wanted = {f.name.lower() for f in table.fields}
        for name, cur in have.items():
            if name not in wanted:
                problems.append(f"{table.name}.{cur.name}: column exists in BigQuery but not in the schema set")
        if problems:
            raise SetupError("; ".join(problems))
        for f in additions:
            self.add_column(table.name, f)
        return [f"added column {table.name}.{f.name}" for f in additions]

    def add_column(self, table: str, column: Field) -> None:
        """Add a NULLABLE (or REPEATED) top-level column."""
        # DDL rather than tables.patch: it reaches the storage of the
        # emulator too, and is equally right on BigQuery.
        self._ddl(
            f"add column {table}.{column.name}",
            f"ALTER TABLE `{self.table_ref(table)}` ADD COLUMN `{column.name}` {_ddl_type(column)}",
        )

    def _ddl(self, what: str, sql: str) -> None:
        """Run one DDL statement to completion, under the retry policy."""
        self.retry.call(what, lambda: self.client.query(sql, location=self.location, retry=None, timeout=60).result())

    def _stored_columns(self, ref: str) -> list:
        """The columns a query of the table sees, from a free dry run.

        Table metadata can lag behind DDL (the emulator's does); what a
        query would read is what a load job must match.
        """
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
        job = self.retry.call(
            f"inspect {ref}",
            lambda: self.client.query(
                f"SELECT * FROM `{ref}`", job_config=config, location=self.location, retry=None, timeout=60
            ),
        )
        return list(job.schema or [])

    def table_options(self, table: str) -> dict | None:
        """Columns (as a query sees them), partitioning, clustering and labels of ``table``; None if missing."""
        ref = self.table_ref(table)
        t = fetch_table(self.client, self.retry, ref)
        if t is None:
            return None
        part = t.time_partitioning
        # Columns and types from what a query sees (the emulator's metadata lags
        # behind DDL); modes from the table's metadata where it has the column
        # (a query's schema drops REQUIRED, nested ones included).
        meta = {f.name.lower(): f for f in t.schema}
        stored = t.schema if t.table_type == "VIEW" else self._stored_columns(ref)
        return {
            "kind": "view" if t.table_type == "VIEW" else "table",
            "columns": {f.name: _column(f, meta.get(f.name.lower())) for f in stored},
            "partitioning": None
            if part is None
            else {
                "type": part.type_,
                "field": part.field,
                "expiration_days": part.expiration_ms / 86_400_000 if part.expiration_ms else None,
                "require_partition_filter": bool(t.require_partition_filter),
            },
            "clustering": list(t.clustering_fields or []),
            "labels": dict(t.labels or {}),
            "kms_key": t.encryption_configuration.kms_key_name if t.encryption_configuration else None,
        }

    def update_options(self, table: str, options: dict) -> None:
        from google.cloud import bigquery

        ref = self.table_ref(table)

        def attempt() -> None:
            t = self.client.get_table(ref, retry=None, timeout=30)
            fields = []
            if "labels" in options:
                # A label missing from the new dict is removed by setting it to None.
                t.labels = {**{k: None for k in t.labels or {}}, **options["labels"]}
                fields.append("labels")
            if "clustering" in options:
                t.clustering_fields = list(options["clustering"]) or None
                fields.append("clustering_fields")
            if "expiration_days" in options:
                days = options["expiration_days"]
                part = t.time_partitioning or bigquery.TimePartitioning()
                part.expiration_ms = int(days * 86_400_000) if days else None
                t.time_partitioning = part
                fields.append("time_partitioning")
            if "require_partition_filter" in options:
                t.require_partition_filter = bool(options["require_partition_filter"])
                fields.append("require_partition_filter")
            self.client.update_table(t, fields, retry=None, timeout=30)

        self.retry.call(f"update options of {ref}", attempt)

    def relax_column(self, table: str, column: str) -> None:
        self._ddl(
            f"relax {table}.{column}", f"ALTER TABLE `{self.table_ref(table)}` ALTER COLUMN `{column}` DROP NOT NULL"
        )

    def fetch_rows(self, table: str) -> list[dict]:
        """Every row of ``table`` (for tests and small audits; a query is billed)."""
        return self.query(f"SELECT * FROM `{self.table_ref(table)}`")


_TYPE_NAMES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN", "STRUCT": "RECORD"}


def _column(f, meta=None) -> dict:
    """A column as ``table_options`` reports it: its type from ``f`` (what a query
    sees), its mode from ``meta`` (the table's metadata) where that has it, and
    for a RECORD its fields alike."""
    out: dict = {"type": _TYPE_NAMES.get(f.field_type, f.field_type), "mode": (meta or f).mode or "NULLABLE"}
    if f.fields:
        subs = {s.name.lower(): s for s in (meta.fields if meta is not None else ())}
        out["fields"] = {sub.name: _column(sub, subs.get(sub.name.lower())) for sub in f.fields}
    return out


def _differences(table: str, want: Field, have, mode: str | None = None) -> list[str]:
    out = []
    have_type = _TYPE_NAMES.get(have.field_type, have.field_type)
    if have_type != want.type:
        out.append(f"{table}.{want.name}: type is {have.field_type} in BigQuery, {want.type} in the schema set")
    # A query's schema may not carry REQUIRED: compare the full mode where
    # table metadata has the column, and repetition everywhere.
    if mode is not None and mode != want.mode:
        out.append(f"{table}.{want.name}: mode is {mode} in BigQuery, {want.mode} in the schema set")
    elif mode is None and (have.mode == "REPEATED") != want.repeated:
        out.append(f"{table}.{want.name}: mode is {have.mode} in BigQuery, {want.mode} in the schema set")
    if want.type == "RECORD" and have_type == "RECORD":
        sub = {f.name.lower(): f for f in have.fields}
        for f in want.fields:
            if f.name.lower() not in sub:
                out.append(f"{table}.{want.name}.{f.name}: new RECORD sub-fields are not added automatically")
            else:
                out += _differences(f"{table}.{want.name}", f, sub[f.name.lower()])
    return out


def _ddl_type(f: Field) -> str:
    names = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}
    if f.type == "RECORD":
        inner = ", ".join(f"`{s.name}` {_ddl_type(s)}" for s in f.fields)
        base = f"STRUCT<{inner}>"
    else:
        base = names.get(f.type, f.type)
    return f"ARRAY<{base}>" if f.repeated else base
