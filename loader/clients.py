"""Google clients from the configuration, for real GCP or the local emulators.

With ``STORAGE_EMULATOR_HOST`` / ``BIGQUERY_EMULATOR_HOST`` set (as
``bqspool local env`` prints), the clients talk to those endpoints with
anonymous credentials; otherwise they use Application Default Credentials.
Credentials are never read from bqspool's own configuration or logged.
"""

from __future__ import annotations

import os

from .config import Config


def _endpoint(var: str) -> str | None:
    host = os.environ.get(var)
    if not host:
        return None
    return host if host.startswith("http") else f"http://{host}"


def storage_client(config: Config):
    import google.cloud.storage as storage

    endpoint = _endpoint("STORAGE_EMULATOR_HOST")
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=config.project, credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
        )
    return storage.Client(project=config.project)


def bigquery_client(config: Config):
    from google.cloud import bigquery

    endpoint = _endpoint("BIGQUERY_EMULATOR_HOST")
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(
            project=config.project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoint},
            location=config.location,
        )
    return bigquery.Client(project=config.project, location=config.location)


def _retry(config: Config):
    from .google_errors import is_transient
    from .retry import RetryPolicy

    return RetryPolicy(config.retry_initial, config.retry_maximum, config.retry_deadline, classify=is_transient)


def make_warehouse(config: Config):
    """The BigQuery warehouse of the configured project, dataset and location."""
    from .bq import BigQueryWarehouse

    config.require("project", "dataset")
    assert config.project is not None and config.dataset is not None
    return BigQueryWarehouse(bigquery_client(config), config.project, config.dataset, config.location, _retry(config))


def make_object_store(config: Config):
    """The configured Cloud Storage bucket as an object store."""
    from .gcs import GcsStore

    config.require("bucket")
    assert config.bucket is not None
    return GcsStore(storage_client(config), config.bucket, _retry(config))


def make_drainer(config: Config, *, commit: bool = True, schemas=None, **kw):
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
    return Drainer(
        config.buffer,
        schemas,
        make_object_store(config),
        make_warehouse(config) if commit else None,
        prefix=config.prefix,
        batch_rows=config.batch_rows,
        batch_bytes=config.batch_bytes,
        per_job=config.batch_per_job,
        quota_per_table_day=config.quota_jobs_per_table_day,
        pace_jobs=config.quota_jobs_per_table_10s,
        lease_seconds=config.lease_seconds,
        **kw,
    )


def make_committer(config: Config, **kw):
    """A Committer of the configured prefix, wired to GCS and BigQuery: it needs no buffer."""
    from .commit import Committer

    config.require("project", "dataset", "bucket")
    return Committer(
        make_object_store(config),
        make_warehouse(config),
        prefix=config.prefix,
        per_job=config.batch_per_job,
        quota_per_table_day=config.quota_jobs_per_table_day,
        pace_jobs=config.quota_jobs_per_table_10s,
        lease_seconds=config.lease_seconds,
        **kw,
    )
