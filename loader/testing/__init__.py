"""In-memory fakes of the loader's backends, with fault knobs, for tests.

``MemoryObjectStore`` and ``MemoryWarehouse`` implement
:class:`~.interfaces.ObjectStore` and :class:`~.interfaces.Warehouse` in
memory, so the drain's decisions (budgets, grouping, bisecting, retries,
pacing, crashes between steps) can be tested in milliseconds, by us and by
users in their own test suites::

    from bqspool.loader.testing import MemoryObjectStore, MemoryWarehouse

    store = MemoryObjectStore()
    warehouse = MemoryWarehouse(store, schemas)
    warehouse.reject_rows = lambda row: "bad geography" if row["g"] == "x" else None
    Drainer(buffer_path, schemas, store, warehouse).drain_once()
    assert warehouse.ids("places") == ...

They behave as the contract suite says BigQuery and GCS do, except where a
knob says otherwise. They read the staged Parquet files with pyarrow, so
what a load job "loads" is exactly what was staged.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bqspool.schemas import SchemaSet
from bqspool.schemas.errors import (
    BackendError,
    NotAvailableError,
    ObjectConflictError,
    PreconditionFailedError,
    RetryableError,
    SetupError,
)

from .interfaces import (
    JobError,
    JobOutcome,
    LifecycleRule,
    QueryParam,
    QueryStat,
    StoredObject,
    TableStorage,
    WarehouseLimits,
)
from .retry import RetryPolicy


class TransientFault(RetryableError):
    """A fault a knob injected; the retry policy treats it as any transient error."""


class _Knobs:
    """Faults shared by both fakes: the next N calls fail transiently, answers
    lost after the call did its work, and latency per call."""

    def __init__(self, retry: RetryPolicy | None, latency: float, sleep: Callable[[float], None]):
        self.retry = retry or RetryPolicy(0.001, 0.002, 0.05)
        self.latency, self.sleep = latency, sleep
        self.fail_next = 0
        self.lost: list[list] = []  # [substring of the call, calls to let through first]
        self.calls: Counter = Counter()

    def call(self, what: str, fn):
        def attempt():
            self.calls[what] += 1
            if self.latency:
                self.sleep(self.latency)
            if self.fail_next > 0:
                self.fail_next -= 1
                raise TransientFault(f"{what}: injected transient failure")
            result = fn()
            for rule in self.lost:
                if rule[0] in what:
                    rule[1] -= 1
                    if rule[1] == 0:
                        raise TransientFault(f"{what}: done, but its answer was lost")
            return result

        return self.retry.call(what, attempt)


class _Faulty:
    """``fail_next`` on a fake: the next N calls fail transiently."""

    knobs: _Knobs

    @property
    def fail_next(self) -> int:
        return self.knobs.fail_next

    @fail_next.setter
    def fail_next(self, n: int) -> None:
        self.knobs.fail_next = n

    def lose_answer(self, call: str, nth: int = 1) -> None:
        """The ``nth`` call whose description contains ``call`` does its work,
        then fails transiently, as when a connection drops before the answer."""
        self.knobs.lost.append([call, nth])


def _checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


class MemoryObjectStore(_Faulty):
    """An object store in a dict, with generations and strongly consistent listings.

    Knobs: ``fail_next``, ``latency``, and :meth:`put` to plant an object
    (the same bytes or others) under a name.
    """

    def __init__(
        self,
        bucket: str = "fake-bucket",
        *,
        retry: RetryPolicy | None = None,
        latency: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ):
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}
        self.meta: dict[str, tuple[int, float]] = {}  # name -> (generation, created)
        self.knobs = _Knobs(retry, latency, sleep)
        self.clock = clock
        self._generation = 0
        self.lifecycle: list[LifecycleRule] = []
        self._lock = threading.Lock()  # committers in threads share one store in tests

    def uri(self, name: str) -> str:
        return f"mem://{self.bucket}/{name}"

    def put(self, name: str, data: bytes) -> StoredObject:
        with self._lock:
            self._generation += 1
            self.objects[name] = data
            self.meta[name] = (self._generation, self.clock())
            return self._info(name)

    def _info(self, name: str) -> StoredObject:
        data = self.objects[name]
        generation, created = self.meta[name]
        return StoredObject(name, len(data), _checksum(data), generation, created)

    def read_uri(self, uri: str) -> bytes:
        return self.objects[uri.removeprefix(f"mem://{self.bucket}/")]

    def upload(self, name: str, path: Path) -> StoredObject:
        def attempt() -> StoredObject:
            data = Path(path).read_bytes()
            existing = self.objects.get(name)
            if existing is not None and existing != data:
                raise ObjectConflictError(
                    f"{self.uri(name)} exists with other content ({len(existing)} bytes, "
                    f"checksum {_checksum(existing)}); expected {len(data)} bytes, "
                    f"checksum {_checksum(data)}"
                )
            return self._info(name) if existing is not None else self.put(name, data)

        return self.knobs.call(f"upload {name}", attempt)

    def list_objects(self, prefix: str) -> list[StoredObject]:
        def attempt() -> list[StoredObject]:
            with self._lock:
                return [self._info(n) for n in sorted(self.objects) if n.startswith(prefix)]

        return self.knobs.call(f"list {prefix}", attempt)

    def read_object(self, name: str) -> tuple[bytes, int] | None:
        def attempt() -> tuple[bytes, int] | None:
            with self._lock:
                if name not in self.objects:
                    return None
                return self.objects[name], self.meta[name][0]

        return self.knobs.call(f"read {name}", attempt)

    def write_object(self, name: str, data: bytes, if_generation_match: int) -> StoredObject:
        def attempt() -> StoredObject:
            with self._lock:
                have = self.meta[name][0] if name in self.objects else 0
                if have != if_generation_match:
                    raise PreconditionFailedError(
                        f"{self.uri(name)} is at generation {have}, not {if_generation_match}"
                    )
                self._generation += 1
                self.objects[name] = data
                self.meta[name] = (self._generation, self.clock())
                return self._info(name)

        return self.knobs.call(f"write {name}", attempt)

    def move_object(self, name: str, to: str) -> bool:
        def attempt() -> bool:
            with self._lock:
                if name not in self.objects:
                    if to not in self.objects:
                        raise BackendError(f"cannot move {self.uri(name)}: neither it nor {self.uri(to)} exists")
                    return False
                if to not in self.objects:
                    self._generation += 1
                    self.objects[to] = self.objects[name]
                    self.meta[to] = (self._generation, self.clock())
                del self.objects[name], self.meta[name]
                return True

        return self.knobs.call(f"move {name}", attempt)

    def move_objects(self, moves: Sequence[tuple[str, str]]) -> list[bool]:
        return [self.move_object(name, to) for name, to in moves]

    def download(self, name: str, path: Path) -> None:
        def attempt() -> None:
            if name not in self.objects:
                raise BackendError(f"{self.uri(name)} does not exist")
            Path(path).write_bytes(self.objects[name])

        self.knobs.call(f"download {name}", attempt)

    def copy_object(self, name: str, to: str) -> bool:
        def attempt() -> bool:
            with self._lock:
                if name not in self.objects:
                    raise BackendError(f"cannot copy {self.uri(name)}: it does not exist")
                if to in self.objects:
                    return False
                self._generation += 1
                self.objects[to] = self.objects[name]
                self.meta[to] = (self._generation, self.clock())
                return True

        return self.knobs.call(f"copy {name}", attempt)

    def set_lifecycle(self, rules: list[LifecycleRule]) -> list[LifecycleRule]:
        self.lifecycle = list(rules)
        return list(self.lifecycle)


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


class MemoryWarehouse(_Faulty):
    """A warehouse in memory that loads the store's Parquet files into lists of rows.

    Knobs:

    - ``fail_next``: the next N calls fail transiently (the retry policy retries);
    - ``job_errors``: errors the next jobs finish with, in order
      (``JobError("backend", ...)`` is transient, ``"data"`` is not);
    - ``reject_rows``: a function of a row that returns a message to reject
      the whole job with (a data error), or None;
    - ``duplicate_ids``: ``"adopt"`` (BigQuery: an existing id is that
      job) or ``"rerun"`` (the emulator: the job runs again);
    - ``running_polls``: a job reads as RUNNING for this many lookups;
    - ``latency`` per call; ``limits`` as BigQuery's by default.
    """

    def __init__(
        self,
        store: MemoryObjectStore,
        schemas: SchemaSet | None = None,
        *,
        limits: WarehouseLimits | None = None,
        retry: RetryPolicy | None = None,
        latency: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.store = store
        self.limits = limits or WarehouseLimits()
        self.knobs = _Knobs(retry, latency, sleep)
        self.clock, self.sleep = clock, sleep
        self.tables: dict[str, _Table] = {}
        self.jobs: dict[str, _Job] = {}
        self.inserts: list[str] = []  # every job id start_load ran, duplicates included
        self.job_errors: list[JobError] = []
        self.reject_rows: Callable[[dict], str | None] | None = None
        self.duplicate_ids = "adopt"
        self.running_polls = 0
        self.dataset_created = False
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
        return self.knobs.call(
            f"get job {job_id}", lambda: self._visible(self.jobs[job_id]) if job_id in self.jobs else None
        )

    def start_load(self, job_id: str, table: str, uris: list[str]) -> JobOutcome:
        def attempt() -> JobOutcome:
            if job_id in self.jobs and self.duplicate_ids == "adopt":
                return self._visible(self.jobs[job_id])
            self.inserts.append(job_id)
            outcome = self._run(job_id, table, uris)
            self.jobs[job_id] = _Job(outcome, table, self.running_polls)
            return self._visible(self.jobs[job_id])

        return self.knobs.call(f"start load {job_id}", attempt)

    def _run(self, job_id: str, table: str, uris: list[str]) -> JobOutcome:
        import pyarrow as pa
        import pyarrow.parquet as pq

        sources = tuple(uris)
        if self.job_errors:
            return JobOutcome(job_id, True, self.job_errors.pop(0), source_uris=sources)
        if table not in self.tables:
            return JobOutcome(
                job_id, True, JobError("data", "notFound", f"table {table} not found"), source_uris=sources
            )
        rows: list[dict] = []
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
        if self.reject_rows is not None:
            for row in rows:
                why = self.reject_rows(row)
                if why:
                    return JobOutcome(job_id, True, JobError("data", "invalid", why), source_uris=sources)
        self.tables[table].rows += rows  # a load job is atomic: all rows or none
        return JobOutcome(job_id, True, None, len(rows), sources)

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
        created, self.dataset_created = not self.dataset_created, True
        return created

    def ensure_table(self, table) -> list[str]:
        cols = {f.name: (f.type, f.mode) for f in table.fields if f.name != "_event_id"}
        have = self.tables.get(table.name)
        if have is None:
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
        raise NotAvailableError("the in-memory warehouse runs no SQL")

    def dry_run(self, sql: str, params: Sequence[QueryParam] = ()) -> int | None:
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
