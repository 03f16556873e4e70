"""The warehouse: BigQuery datasets, tables and load jobs.

Load jobs are idempotent by job id: always look a job up (in the configured
location) before inserting it, and treat a 409 on insert as "look it up".
The emulator runs a duplicate job id again instead of answering 409, so the
look-up is what keeps a retried drain from loading twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from google.api_core import exceptions as gexc

from bqspool.schemas.bigquery import schema_to_json
from bqspool.schemas.definition import Field, TableDef
from bqspool.schemas.errors import SetupError

from .retry import TRANSIENT_REASONS, RetryPolicy

log = logging.getLogger("bqspool.loader")

POLL_FIRST_S, POLL_MAX_S = 0.1, 2.0  # polling a running load job (see BigQueryWarehouse.wait)


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    done: bool
    error: dict | None = None
    output_rows: int | None = None
    source_uris: tuple[str, ...] | None = None  # what a load job reads, where the backend says

    @property
    def transient(self) -> bool:
        """A failed job whose error is the backend's, not the data's."""
        return bool(self.error) and self.error.get("reason") in TRANSIENT_REASONS


def _outcome(job) -> JobOutcome:
    uris = getattr(job, "source_uris", None)
    return JobOutcome(job.job_id, job.state == "DONE", job.error_result, getattr(job, "output_rows", None),
                      tuple(uris) if uris else None)


class BigQueryWarehouse:
    def __init__(self, client, project: str, dataset: str, location: str, retry: RetryPolicy, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.project, self.dataset, self.location = project, dataset, location
        self.retry = retry
        self.clock, self.sleep = clock, sleep

    def table_ref(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    # -- load jobs ------------------------------------------------------------

    def _lookup(self, job_id: str) -> JobOutcome | None:
        try:
            return _outcome(self.client.get_job(job_id, location=self.location, retry=None, timeout=30))
        except gexc.NotFound:
            return None

    def get_job(self, job_id: str) -> JobOutcome | None:
        return self.retry.call(f"look up job {job_id}", lambda: self._lookup(job_id))

    def start_load(self, job_id: str, table: str, uris: list[str]) -> JobOutcome:
        """Submit a load job; if the id exists already (409) adopt that job."""
        from google.cloud import bigquery

        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
            decimal_target_types=["NUMERIC", "BIGNUMERIC"],
        )
        config.parquet_options = bigquery.ParquetOptions()
        config.parquet_options.enable_list_inference = True

        def attempt():
            # Look up before every insert, retries included: an insert that
            # timed out may have created the job (the emulator would run a
            # duplicate id again instead of answering 409).
            existing = self._lookup(job_id)
            if existing is not None:
                return existing
            try:
                job = self.client.load_table_from_uri(
                    uris, self.table_ref(table), job_id=job_id, location=self.location,
                    job_config=config, retry=None, timeout=60,
                )
                return _outcome(job)
            except gexc.Conflict:
                existing = self._lookup(job_id)
                if existing is None:  # 409 but not found: let the retry ask again
                    raise gexc.ServiceUnavailable(f"job {job_id}: 409 but not found") from None
                return existing

        return self.retry.call(f"start load job {job_id}", attempt)

    def wait(self, job_id: str, timeout: float = 3600.0) -> JobOutcome:
        """Poll until the job is DONE or ``timeout`` passes; returns its last outcome.

        Polls soon at first and then less often (0.1 s doubling to 2 s), so a
        short job is seen done within a fraction of a second and a long one
        costs a request every 2 s, not every 0.1.
        """
        deadline = self.clock() + timeout
        delay = POLL_FIRST_S
        while True:
            outcome = self.get_job(job_id)
            if outcome is None:
                raise gexc.NotFound(f"job {job_id} disappeared")
            if outcome.done or self.clock() >= deadline:
                return outcome
            self.sleep(min(delay, max(0.0, deadline - self.clock())))
            delay = min(delay * 2, POLL_MAX_S)

    # -- setup ----------------------------------------------------------------

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

        def current():
            try:
                return self.client.get_table(ref, retry=None, timeout=30)
            except gexc.NotFound:
                return None

        existing = self.retry.call(f"get table {ref}", current)
        if existing is None:
            body = bigquery.Table(ref, schema=[bigquery.SchemaField.from_api_repr(f) for f in schema_to_json(table)])
            if table.description:
                body.description = table.description
            if table.partitioning:
                p = table.partitioning
                body.time_partitioning = bigquery.TimePartitioning(
                    type_=p.type, field=p.field,
                    expiration_ms=int(p.expiration_days * 86_400_000) if p.expiration_days else None,
                )
                body.require_partition_filter = p.require_partition_filter or None
            if table.clustering:
                body.clustering_fields = list(table.clustering)
            if table.labels:
                body.labels = dict(table.labels)
            self.retry.call(f"create table {ref}", lambda: self.client.create_table(body, exists_ok=True, retry=None, timeout=30))
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
            # DDL rather than tables.patch: it reaches the storage of the
            # emulator too, and is equally right on BigQuery.
            sql = f"ALTER TABLE `{ref}` ADD COLUMN `{f.name}` {_ddl_type(f)}"
            self.retry.call(f"add column {table.name}.{f.name}", lambda sql=sql: self.client.query(
                sql, location=self.location, retry=None, timeout=60).result())
        return [f"added column {table.name}.{f.name}" for f in additions]

    def _stored_columns(self, ref: str) -> list:
        """The columns a query of the table sees, from a free dry run.

        Table metadata can lag behind DDL (the emulator's does); what a
        query would read is what a load job must match.
        """
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
        job = self.retry.call(f"inspect {ref}", lambda: self.client.query(
            f"SELECT * FROM `{ref}`", job_config=config, location=self.location, retry=None, timeout=60))
        return list(job.schema or [])

    def query(self, sql: str) -> list[dict]:
        return self.retry.call("query", lambda: [dict(r) for r in self.client.query(
            sql, location=self.location, retry=None, timeout=120).result()])


def _differences(table: str, want: Field, have, mode: str | None = None) -> list[str]:
    out = []
    have_type = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN", "STRUCT": "RECORD"}.get(
        have.field_type, have.field_type)
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
