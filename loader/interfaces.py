"""The loader's backend interfaces: an object store and a warehouse.

The core (the ship and commit stages, the retry policy) talks to these
protocols (``typing.Protocol``) and imports no cloud SDK. Three families implement
them: the Google adapters (:mod:`.backends`), which translate
Google's errors at the boundary; the in-memory fakes of
:mod:`bqspool.loader.testing`, with knobs for the faults real servers
cannot produce; and whatever a user writes for another backend. The
contract suite (``tests/test_contract.py``) states what bqspool relies on
from each, and runs against every implementation.

The warehouse is three protocols, :class:`LoadJobs`, :class:`TableAdmin`
and :class:`OperatorQueries`, with :class:`Warehouse` their union: each
caller depends on the part it uses (the committer on load jobs alone).

To add a backend: implement :class:`ObjectStore` and :class:`Warehouse`,
raise only bqspool's errors (``BackendUnavailableError`` for what may pass,
``BackendError`` and its children for what will not), declare the
warehouse's :class:`WarehouseLimits`, and run the contract suite against it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from bqspool.schemas.definition import Field, TableDef

    from .billing import RequestCounts


@dataclass(frozen=True)
class StoredObject:
    """An object in the store: its name, size and the store's checksum of it,
    and, where the store says (listings, stats, conditional writes), its
    generation, when it was created and last written (seconds since the
    epoch, by the store's clock: never compare these with a host's clock),
    its storage class and its custom metadata."""

    name: str
    size: int
    checksum: str
    generation: int = 0
    created: float = 0.0
    storage_class: str = "STANDARD"
    updated: float = 0.0
    metadata: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


class ObjectData(NamedTuple):
    """An object's bytes, and the generation and write time (the store's clock) they are of."""

    data: bytes
    generation: int
    updated: float


@runtime_checkable
class ObjectStore(Protocol):
    """Where staged files go, and where the committer keeps its state.

    Uploads are idempotent by name. The commit stage coordinates through
    the store alone: listings and stats must be strongly consistent (an
    object written is seen by the next call), and ``write_object`` must
    honour its generation precondition. Nothing may depend on a conditional
    delete (fake-gcs-server ignores those), so the interface has none.
    Times the store reports are the store's own (:meth:`now` is its clock),
    so that no decision depends on two hosts' clocks agreeing.

    Every request is counted in ``requests`` (:mod:`.billing`) by the
    operation it is, as it is sent: retries and each page of a listing too.
    """

    @property
    def requests(self) -> RequestCounts:
        """What this store sent, by operation (see :mod:`.billing`)."""
        ...

    def uri(self, name: str) -> str:
        """The URI a warehouse's load job reads ``name`` from."""
        ...

    def now(self) -> float:
        """The store's clock (epoch seconds), as of its latest answer."""
        ...

    def upload(self, name: str, path: Path, metadata: Mapping[str, str] | None = None) -> StoredObject:
        """Create ``name`` from the file at ``path``, with custom ``metadata``,
        only if it does not exist (one insert).

        If it exists with the same size and checksum, that is an earlier
        attempt of ours: return it. If it exists with other bytes, raise
        ``ObjectConflictError``. The store verifies what it received.
        """
        ...

    def list_objects(self, prefix: str, start_offset: str | None = None) -> list[StoredObject]:
        """Every object whose name starts with ``prefix`` (and, given ``start_offset``,
        is not before it), by name, with its metadata (class A: one request per page
        of up to 1,000 objects)."""
        ...

    def stat(self, name: str) -> StoredObject | None:
        """The object's metadata, or None if there is none (class B)."""
        ...

    def read_object(self, name: str) -> ObjectData | None:
        """The object's bytes, generation and write time, or None if there is none."""
        ...

    def delete_objects(self, names: Sequence[str]) -> list[bool]:
        """Delete each of ``names`` (free); True for each deleted now, False for one
        that was gone already. A store that can batch calls does."""
        ...

    def write_object(
        self, name: str, data: bytes, if_generation_match: int, metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        """Write ``data``, with custom ``metadata``, only if the object's generation is
        ``if_generation_match`` (0: only if it does not exist); ``PreconditionFailedError``
        otherwise. Listings return the metadata, so what it says costs no read."""
        ...

    def move_object(self, name: str, to: str) -> bool:
        """Copy ``name`` to ``to`` (kept if already there), then delete ``name``.

        Safe to repeat: True if it moved now, False if ``name`` was already
        gone (an earlier call moved it). Unconditional: callers must not
        depend on a race between two moves of one object.
        """
        ...

    def move_objects(self, moves: Sequence[tuple[str, str]]) -> list[bool]:
        """``move_object`` for each ``(name, to)`` pair, with its result, in order.

        A store that can put many calls into one request does (GCS: batch
        requests of up to 100 calls, instead of two requests an object: a
        committer archives thousands at a time). Each pair keeps ``move_object``'s
        contract; an error raised leaves some pairs moved and others not,
        and repeating the call finishes them.
        """
        ...

    def download(self, name: str, path: Path) -> None:
        """Write the object's bytes to ``path``; ``BackendError`` if there is none."""
        ...

    def read_bytes(self, name: str) -> bytes:
        """The object's bytes, in memory: ``download`` for a small object, one read
        (class B) without a file; ``BackendError`` if there is none."""
        ...

    def copy_object(self, name: str, to: str) -> bool:
        """Copy ``name`` to ``to`` unless ``to`` exists (True if copied now);
        ``BackendError`` if ``name`` does not exist. Safe to repeat."""
        ...

    def set_lifecycle(self, rules: list[LifecycleRule]) -> list[LifecycleRule]:
        """Make ``rules`` the bucket's lifecycle; returns the rules the bucket
        holds afterwards, so a caller can tell a store that ignores them."""
        ...


def find_object(store: ObjectStore, name: str) -> StoredObject | None:
    """The object ``name``, or None: its metadata, never its bytes.

    The one way the loader asks whether an object exists: a stat (class B,
    strongly consistent), not a listing (class A)."""
    return store.stat(name)


@dataclass(frozen=True)
class LifecycleRule:
    """One bucket lifecycle rule: after ``age_days``, objects under ``prefix``
    move to ``storage_class``, or are deleted when ``action`` is ``delete``."""

    action: Literal["set-storage-class", "delete"]
    age_days: int
    prefix: str
    storage_class: str | None = None

    def __str__(self) -> str:
        what = f"move to {self.storage_class}" if self.action == "set-storage-class" else "delete"
        return f"{what} after {self.age_days} days: {self.prefix}*"


JobFailure = Literal["backend", "data"]


@dataclass(frozen=True)
class JobError:
    """Why a job failed: the backend's fault (retry under a new job id) or the data's."""

    kind: JobFailure
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(frozen=True)
class JobOutcome:
    """A load job as the warehouse reports it."""

    job_id: str
    done: bool
    error: JobError | None = None
    output_rows: int | None = None
    source_uris: tuple[str, ...] | None = None  # what the job reads, where the backend says

    @property
    def transient(self) -> bool:
        """A failed job whose error is the backend's, not the data's."""
        return self.error is not None and self.error.kind == "backend"


@dataclass(frozen=True)
class WarehouseLimits:
    """What the warehouse allows per table and per job; the drain paces and budgets by these."""

    jobs_per_table_day: int = 1500  # failed jobs included
    jobs_per_table_10s: int = 5  # table metadata updates, load jobs included
    uris_per_job: int = 10_000
    partitions_per_job: int = 4000  # partitions one load job may modify
    partitions_per_table: int = 10_000  # partitions a table may hold


@runtime_checkable
class LoadJobs(Protocol):
    """Idempotent load jobs: what the committer needs of a warehouse, and nothing more.

    A job id names at most one job, ever: ``get_job`` before
    ``start_load``, and ``start_load`` of an existing id returns that job
    instead of running another.
    """

    limits: WarehouseLimits

    @property
    def requests(self) -> RequestCounts:
        """What this warehouse sent, by operation: job inserts, job lookups, queries (:mod:`.billing`)."""
        ...

    def get_job(self, job_id: str) -> JobOutcome | None:
        """The job, or None if no job has that id."""
        ...

    def start_load(self, job_id: str, table: str, uris: list[str]) -> JobOutcome:
        """Load the Parquet files ``uris`` into ``table`` under ``job_id``, appending.

        An existing job of that id is returned, not run again.
        """
        ...

    def wait(self, job_id: str, timeout: float = 3600.0) -> JobOutcome:
        """Poll until the job is done or ``timeout`` passes; its last outcome."""
        ...


@runtime_checkable
class TableAdmin(Protocol):
    """The dataset and its tables: what ``setup``, ``verify`` and ``restore`` change."""

    def ensure_dataset(self) -> bool:
        """Create the dataset if missing; whether it was created."""
        ...

    def ensure_table(self, table: TableDef) -> list[str]:
        """Create ``table`` as its definition says, or add its new NULLABLE
        columns; the changes made. ``SetupError`` for what cannot be done."""
        ...

    def table_options(self, table: str) -> dict | None:
        """What the warehouse holds for ``table``, or None if there is no such
        table: ``columns`` (name to ``type``, ``mode`` and, for RECORDs,
        ``fields`` alike), ``partitioning`` (type, field, expiration_days,
        require_partition_filter), ``clustering``, ``labels`` and ``kind``
        (``table`` or ``view``)."""
        ...

    def update_options(self, table: str, options: dict) -> None:
        """Set options of an existing table: any of ``labels``, ``clustering``,
        ``expiration_days`` (of its partitions; None for never) and
        ``require_partition_filter``."""
        ...

    def add_column(self, table: str, column: Field) -> None:
        """Add a NULLABLE or REPEATED top-level column to an existing table."""
        ...

    def relax_column(self, table: str, column: str) -> None:
        """Make a REQUIRED top-level column NULLABLE (always allowed)."""
        ...

    def create_view(self, name: str, sql: str) -> bool:
        """Create or replace the view ``name`` over ``sql``; whether it changed."""
        ...


@runtime_checkable
class OperatorQueries(Protocol):
    """Reading the warehouse for operators: queries, sizes and history (may be billed)."""

    def fetch_rows(self, table: str) -> list[dict]:
        """Every row of ``table`` as Python values (for tests and small audits; may be billed)."""
        ...

    def query(self, sql: str, params: Sequence[QueryParam] = ()) -> list[dict]:
        """Run ``sql`` with named parameters (``@name``), tables resolved in the
        dataset; the rows as dicts. Billed by what it scans.
        ``NotAvailableError`` from a backend that runs no SQL."""
        ...

    def dry_run(self, sql: str, params: Sequence[QueryParam] = ()) -> int | None:
        """The bytes ``sql`` would scan (and be billed for), without running it;
        None where the backend does not say."""
        ...

    def table_storage(self, table: str) -> TableStorage | None:
        """The table's size as the warehouse bills it, or None if there is no such table."""
        ...

    def partition_count(self, table: str) -> int | None:
        """How many partitions ``table`` holds (its limit is ``limits.partitions_per_table``);
        None where the backend does not say, or there is no such table."""
        ...

    def query_history(self, since: float) -> list[QueryStat]:
        """Query jobs run in the project since ``since`` (epoch seconds): bytes
        billed and how long each ran. ``NotAvailableError`` where the backend
        keeps no such history."""
        ...


@runtime_checkable
class Warehouse(LoadJobs, TableAdmin, OperatorQueries, Protocol):
    """A whole warehouse adapter: load jobs, table administration and operator queries."""


@dataclass(frozen=True)
class QueryParam:
    """A named query parameter: ``type`` is a BigQuery type name (STRING, INT64,
    FLOAT64, BOOL, DATE, TIMESTAMP), ``value`` a Python value of that type."""

    name: str
    type: str
    value: object


@dataclass(frozen=True)
class TableStorage:
    """A table's rows and bytes as the warehouse bills storage: ``active_bytes``
    were changed in the last 90 days, ``long_term_bytes`` not."""

    rows: int
    active_bytes: int
    long_term_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.active_bytes + self.long_term_bytes


@dataclass(frozen=True)
class QueryStat:
    """One query job: when it started, its id, bytes billed, seconds it ran, and its
    labels (bqspool's own jobs carry ``bqspool`` and ``bqspool_role``: :mod:`.labels`)."""

    started: float
    job_id: str
    bytes_billed: int
    seconds: float
    labels: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def role(self) -> str | None:
        """The bqspool role that ran it (verify, query, ...), or None for someone else's job."""
        return self.labels.get("bqspool_role") if "bqspool" in self.labels else None
