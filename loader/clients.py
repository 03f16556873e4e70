"""The loader's parts, wired from the configuration: the Google backends, the drain, the committer.

Everything Google is built in :mod:`.backends`; this module only decides
what goes where, from one :class:`~.config.Config`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bqspool.schemas import SchemaSet

from .config import Config

if TYPE_CHECKING:
    from .backends.bq import BigQueryWarehouse
    from .backends.gcs import GcsStore
    from .commit.committer import Committer
    from .drain import Drainer
    from .operate.doctor import Doctor


def make_warehouse(config: Config, role: str = "commit") -> BigQueryWarehouse:
    """The BigQuery warehouse of the configured project, dataset and location, its jobs
    labelled with ``role`` (commit, restore, verify, query) and run in ``job_project``."""
    from .backends.bq import BigQueryWarehouse
    from .backends.google_clients import bigquery_client, retry_policy

    config.require("project", "dataset")
    assert config.project is not None and config.dataset is not None
    from .labels import job_labels

    warehouse = BigQueryWarehouse(
        bigquery_client(config), config.project, config.dataset, config.location, retry_policy(config)
    )
    warehouse.labels = job_labels(role, config.prefix)
    warehouse.kms_key = config.kms_key
    return warehouse


def make_object_store(config: Config) -> GcsStore:
    """The configured Cloud Storage bucket as an object store."""
    from .backends.gcs import GcsStore
    from .backends.google_clients import retry_policy, storage_client

    config.require("bucket")
    assert config.bucket is not None
    store = GcsStore(storage_client(config), config.bucket, retry_policy(config))
    store.kms_key = config.kms_key
    return store


def make_drainer(config: Config, *, commit: bool = True, schemas: SchemaSet | None = None, **kw: Any) -> Drainer:
    """A Drainer wired to GCS and, unless it only ships (``commit=False``), BigQuery, as
    configured; ``schemas`` (a SchemaSet) instead of the configured schema set."""
    from bqspool.schemas import load_schema_set

    from .drain import Drainer

    config.require(
        "bucket", *(() if schemas is not None else ("schemas",)), *(("project", "dataset") if commit else ())
    )
    if schemas is None:
        assert config.schemas is not None
        schemas = load_schema_set(config.schemas)
    warehouse = make_warehouse(config) if commit else None
    return Drainer(config.buffer, schemas, make_object_store(config), warehouse, config.settings(), **kw)


def make_committer(config: Config, role: str = "commit", **kw: Any) -> Committer:
    """A Committer of the configured prefix, wired to GCS and BigQuery: it needs no buffer.
    Its jobs are labelled ``role`` (restore's are "restore")."""
    from .commit.committer import Committer

    config.require("project", "dataset", "bucket")
    if config.schemas and "tables" not in kw:
        from bqspool.schemas import load_schema_set

        kw["tables"] = list(load_schema_set(config.schemas))  # objects of other tables are quarantined
    return Committer(make_object_store(config), make_warehouse(config, role), config.settings(), **kw)


def make_doctor(config: Config, role: str, store: Any = None, warehouse: Any = None) -> Doctor:
    """`bqspool doctor`'s checks for ``role``, wired to Google (or the local stack) through
    the probe; ``store`` and ``warehouse`` are made here unless the caller has them (a
    shipping host has no warehouse)."""
    from .backends.probes import GoogleProbe
    from .operate.doctor import Doctor

    store = store if store is not None else make_object_store(config)
    if warehouse is None and role != "ship":
        warehouse = make_warehouse(config)
    schemas = None
    if config.schemas:
        from bqspool.schemas import load_schema_set

        schemas = load_schema_set(config.schemas)
    probe = GoogleProbe(config, store, warehouse)
    return Doctor(config, role, probe, store=store, warehouse=warehouse, schemas=schemas)
