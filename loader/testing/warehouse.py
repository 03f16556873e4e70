"""A warehouse in memory: load jobs read the store's Parquet files into lists of rows."""

from __future__ import annotations

import copy
import io
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bqspool.schemas import SchemaSet
from bqspool.schemas.definition import Partitioning
from bqspool.schemas.errors import NotAvailableError, SetupError

from .. import partitions
from ..billing import RequestCounts
from ..interfaces import JobError, JobOutcome, QueryParam, QueryStat, TableStorage, WarehouseLimits
from ..labels import load_labels
from ..retry import RetryPolicy
from .faults import Calls, WarehouseKnobs
from .store import MemoryObjectStore


@dataclass
class _Job:
    outcome: JobOutcome
    table: str
    polls_left: int = 0


@dataclass
class _Table:
    rows: list[dict] = field(default_factory=list)
    columns: dict[str, tuple[str, str]] = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    partitions: set[str] = field(default_factory=set)  # by BigQuery's names (``loader.partitions``)


class MemoryWarehouse:
    """A warehouse in memory that loads the store's Parquet files into lists of rows.

    Faults: ``knobs`` (:class:`~.faults.WarehouseKnobs`); ``limits`` as
    BigQuery's by default.
    """

    def __init__(
        self,
        store: MemoryObjectStore,
        schemas: SchemaSet | None = None,
        *,
        knobs: WarehouseKnobs | None = None,
        limits: WarehouseLimits | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.store = store
        self.limits = limits or WarehouseLimits()
        self.knobs = knobs or WarehouseKnobs()
        self._calls = Calls(self.knobs, retry, sleep)
        self.clock, self.sleep = clock, sleep
        self.tables: dict[str, _Table] = {}
        self.jobs: dict[str, _Job] = {}
        self.inserts: list[str] = []  # every job id start_load ran, duplicates included
        self.requests = RequestCounts()  # as BigQuery's adapter counts them (billing.OPERATIONS)
        self.dataset_created = False
        # The options a configuration gives (``clients.configure``), and each job or table with those it carried.
        self.labels: dict[str, str] = {}
        self.kms_key: str | None = None
        self.key_for: Callable[[str], str | None] = lambda table: self.kms_key
        self.job_project: str | None = None
        self.principal: str | None = None
        self.recorded: list[dict] = []  # {"call", "table", "labels", "kms_key", "job_project", "principal"}
        if schemas is not None:
            for table in schemas.tables():
                self.ensure_table(table)

    # -- jobs ---------------------------------------------------------------

    def _visible(self, job: _Job) -> JobOutcome:
        if job.polls_left > 0:
            job.polls_left -= 1
            return JobOutcome(job.outcome.job_id, False, source_uris=job.outcome.source_uris)
        return job.outcome

    def get_job(self, job_id: str) -> JobOutcome | None:
        def attempt() -> JobOutcome | None:
            self.requests.add("job_lookup")
            return self._visible(self.jobs[job_id]) if job_id in self.jobs else None

        return self._calls.call(f"get job {job_id}", attempt)

    def _record(self, call: str, table: str | None, labels: dict[str, str], key: str | None) -> None:
        self.recorded.append(
            {
                "call": call,
                "table": table,
                "labels": labels,
                "kms_key": key,
                "job_project": self.job_project,
                "principal": self.principal,
            }
        )

    def start_load(self, job_id: str, table: str, uris: list[str]) -> JobOutcome:
        def attempt() -> JobOutcome:
            self.requests.add("job_insert")
            self._record("load", table, load_labels(self.labels, table), self.key_for(table))
            if job_id in self.jobs and self.knobs.duplicate_ids == "adopt":
                return self._visible(self.jobs[job_id])
            self.inserts.append(job_id)
            outcome = self._run(job_id, table, uris)
            self.jobs[job_id] = _Job(outcome, table, self.knobs.running_polls)
            return self._visible(self.jobs[job_id])

        return self._calls.call(f"start load {job_id}", attempt)

    def _run(self, job_id: str, table: str, uris: list[str]) -> JobOutcome:
        import pyarrow as pa
        import pyarrow.parquet as pq

        sources = tuple(uris)
        if self.knobs.job_errors:
            return JobOutcome(job_id, True, self.knobs.job_errors.pop(0), source_uris=sources)
        if table not in self.tables:
            return JobOutcome(
                job_id, True, JobError("data", "notFound", f"table {table} not found"), source_uris=sources
            )
        rows: list[dict] = []
        touched: set[str] = set()
        want = set(self.tables[table].columns) | {"_event_id"}
        for uri in uris:
            try:
                data = pq.read_table(io.BytesIO(self.store.read_uri(uri)))
            except KeyError:
                return JobOutcome(job_id, True, JobError("data", "notFound", f"not found: {uri}"), source_uris=sources)
            except (pa.ArrowException, OSError) as exc:  # as BigQuery: a file it cannot read fails the job
                return JobOutcome(job_id, True, JobError("data", "invalid", f"{uri}: {exc}"), source_uris=sources)
            # As BigQuery does: columns by name, none the table lacks.
            extra = set(data.column_names) - want
            if extra:
                return JobOutcome(
                    job_id, True, JobError("data", "invalid", f"no such field: {sorted(extra)[0]}"), source_uris=sources
                )
            rows += data.to_pylist()
            touched |= set(partitions.names(data, self._partitioning(table)))
        too_many = self._too_many(table, touched)
        if too_many:
            return JobOutcome(job_id, True, JobError("data", "invalid", too_many), source_uris=sources)
        reject = self.knobs.reject_rows
        if reject is not None:
            for row in rows:
                why = reject(row)
                if why:
                    return JobOutcome(job_id, True, JobError("data", "invalid", why), source_uris=sources)
        self.tables[table].rows += rows  # a load job is atomic: all rows or none
        self.tables[table].partitions |= touched
        return JobOutcome(job_id, True, None, len(rows), sources)

    def _partitioning(self, table: str) -> Partitioning | None:
        part = self.tables[table].options["partitioning"]
        return None if part is None else Partitioning(part["field"], part["type"])

    def _too_many(self, table: str, touched: set[str]) -> str | None:
        """BigQuery's refusal of a job that modifies too many partitions, or fills the table past its limit."""
        if len(touched) > self.limits.partitions_per_job:
            return (
                f"Too many partitions produced by load job, allowed {self.limits.partitions_per_job}, "
                f"load job produces at least {len(touched)} partitions"
            )
        after = len(self.tables[table].partitions | touched)
        if after > self.limits.partitions_per_table:
            return f"Too many partitions in table {table}: {after}, allowed {self.limits.partitions_per_table}"
        return None

    def partition_count(self, table: str) -> int | None:
        t = self.tables.get(table)
        return None if t is None else len(t.partitions)

    def wait(self, job_id: str, timeout: float = 3600.0) -> JobOutcome:
        deadline = self.clock() + timeout
        while True:
            outcome = self.get_job(job_id)
            if outcome is None:
                raise KeyError(job_id)
            if outcome.done or self.clock() >= deadline:
                return outcome
            self.sleep(0.01)

    # -- datasets and tables ----------------------------------------------------

    def ensure_dataset(self) -> bool:
        self.requests.add("table_admin")
        created, self.dataset_created = not self.dataset_created, True
        return created

    def ensure_table(self, table) -> list[str]:
        self.requests.add("table_admin")
        cols = {f.name: (f.type, f.mode) for f in table.fields if f.name != "_event_id"}
        have = self.tables.get(table.name)
        if have is None:
            key = table.kms_key or self.kms_key
            self._record("create table", table.name, {}, key)
            part = table.partitioning
            self.tables[table.name] = _Table(
                columns=cols,
                options={
                    "partitioning": None
                    if part is None
                    else {
                        "type": part.type,
                        "field": part.field,
                        "expiration_days": part.expiration_days,
                        "require_partition_filter": bool(part.require_partition_filter),
                    },
                    "clustering": list(table.clustering or []),
                    "labels": dict(table.labels or {}),
                    "kms_key": key,
                },
            )
            return [f"created table {table.name}"]
        added = []
        for name, (typ, mode) in cols.items():
            if name not in have.columns:
                if mode == "REQUIRED":
                    raise SetupError(f"{table.name}.{name}: a new REQUIRED column cannot be added; make it NULLABLE")
                have.columns[name] = (typ, mode)
                added.append(f"added column {table.name}.{name}")
            elif have.columns[name] != (typ, mode):
                raise SetupError(
                    f"{table.name}.{name}: {have.columns[name]} in the warehouse, {(typ, mode)} in the schema set"
                )
        return added

    def table_options(self, table: str) -> dict | None:
        t = self.tables.get(table)
        if t is None:
            return None
        columns = {"_event_id": {"type": "STRING", "mode": "REQUIRED"}}  # every table has it, first
        columns.update({n: {"type": ty, "mode": m} for n, (ty, m) in t.columns.items()})
        return {"kind": "table", "columns": columns, **copy.deepcopy(t.options)}

    def update_options(self, table: str, options: dict) -> None:
        opts = self.tables[table].options
        for key in ("labels", "clustering"):
            if key in options:
                opts[key] = copy.deepcopy(options[key])
        if opts["partitioning"] is not None:
            for key in ("expiration_days", "require_partition_filter"):
                if key in options:
                    opts["partitioning"][key] = options[key]

    def add_column(self, table: str, column) -> None:
        self.tables[table].columns[column.name] = (column.type, column.mode)

    def relax_column(self, table: str, column: str) -> None:
        typ, _ = self.tables[table].columns[column]
        self.tables[table].columns[column] = (typ, "NULLABLE")

    def query(self, sql: str, params: Sequence[QueryParam] = ()) -> list[dict]:
        self.requests.add("query")
        self._record("query", None, dict(self.labels), None)
        raise NotAvailableError("the in-memory warehouse runs no SQL")

    def dry_run(self, sql: str, params: Sequence[QueryParam] = ()) -> int | None:
        self.requests.add("query")
        return None

    def table_storage(self, table: str) -> TableStorage | None:
        t = self.tables.get(table)
        if t is None:
            return None
        # Roughly BigQuery's logical size: the rows' JSON (its numbers per row are close for strings).
        size = sum(len(json.dumps(r, default=str)) for r in t.rows)
        return TableStorage(len(t.rows), size, 0)

    def query_history(self, since: float) -> list[QueryStat]:
        raise NotAvailableError("the in-memory warehouse keeps no query history")

    def create_view(self, name: str, sql: str) -> bool:
        raise NotAvailableError("the in-memory warehouse runs no SQL, so it has no views")

    # -- for assertions -----------------------------------------------------------

    def fetch_rows(self, table: str) -> list[dict]:
        return [dict(r) for r in self.tables[table].rows]

    def ids(self, table: str) -> Counter:
        """How many times each ``_event_id`` was loaded into ``table``."""
        return Counter(r["_event_id"] for r in self.tables[table].rows)
