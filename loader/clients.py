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
    warehouse = BigQueryWarehouse(
        bigquery_client(config), config.project, config.dataset, config.location, retry_policy(config)
    )
    configure(config, warehouse=warehouse, role=role)
    return warehouse


def configure(config: Config, *, store: Any = None, warehouse: Any = None, role: str = "commit") -> None:
    """Give a store and a warehouse (Google's adapters or the fakes alike) what every request
    of ``config`` carries: the jobs' labels, the customer-managed keys (the configured one and
    tables' own), the job project and the impersonated principal. The Google clients are
    built with the last two (``google_clients``); the adapters keep them to say so."""
    keys = table_keys(config)

    def key_for(table: str | None) -> str | None:  # a table's own key, else the configured one
        return keys.get(table or "") or config.kms_key

    if warehouse is not None:
        from .labels import job_labels

        warehouse.labels = job_labels(role, config.prefix)
        warehouse.kms_key, warehouse.key_for = config.kms_key, key_for
        warehouse.job_project = config.job_project or config.project
        warehouse.principal = config.impersonate_service_account
    if store is not None:
        from .layout import Layout

        layout = Layout(config.prefix)

        def key_of(name: str) -> str | None:
            # A table's objects (staged, archived, split...) go with its key; the commit log
            # and the lease, which parse as no table's, with the configured one.
            found = layout.parse(name)
            return key_for(found[1].table if found else None)

        store.key_of, store.principal = key_of, config.impersonate_service_account


def table_keys(config: Config) -> dict[str, str]:
    """The tables of the configured schema set that name a key of their own (``kms_key``)."""
    if not config.schemas:
        return {}
    from bqspool.schemas import load_schema_set

    return {t.name: t.kms_key for t in load_schema_set(config.schemas).tables() if t.kms_key}


def make_object_store(config: Config) -> GcsStore:
    """The configured Cloud Storage bucket as an object store."""
    from .backends.gcs import GcsStore
    from .backends.google_clients import retry_policy, storage_client

    config.require("bucket")
    assert config.bucket is not None
    store = GcsStore(storage_client(config), config.bucket, retry_policy(config))
    configure(config, store=store)
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

        schemas = load_schema_set(config.schemas)
        kw["tables"] = list(schemas)  # objects of other tables are quarantined
        kw.setdefault("partitioning", {t.name: t.partitioning for t in schemas.tables()})
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
