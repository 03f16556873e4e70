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
    from google.cloud import storage

    endpoint = _endpoint("STORAGE_EMULATOR_HOST")
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=config.project, credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": endpoint})
    return storage.Client(project=config.project)


def bigquery_client(config: Config):
    from google.cloud import bigquery

    endpoint = _endpoint("BIGQUERY_EMULATOR_HOST")
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(project=config.project, credentials=AnonymousCredentials(),
                               client_options={"api_endpoint": endpoint}, location=config.location)
    return bigquery.Client(project=config.project, location=config.location)


def _retry(config: Config):
    from .retry import RetryPolicy

    return RetryPolicy(config.retry_initial, config.retry_maximum, config.retry_deadline)


def make_warehouse(config: Config):
    """The BigQuery warehouse of the configured project, dataset and location."""
    from .bq import BigQueryWarehouse

    config.require("project", "dataset")
    return BigQueryWarehouse(bigquery_client(config), config.project, config.dataset, config.location,
                             _retry(config))


def make_drainer(config: Config, **kw):
    """A Drainer wired to GCS and BigQuery as configured."""
    from bqspool.schemas import load_schema_set

    from .drain import Drainer
    from .gcs import GcsStore

    config.require("schemas", "project", "dataset", "bucket")
    objects = GcsStore(storage_client(config), config.bucket, _retry(config))
    return Drainer(
        config.buffer, load_schema_set(config.schemas), objects, make_warehouse(config),
        prefix=config.prefix, batch_rows=config.batch_rows, batch_bytes=config.batch_bytes,
        per_job=config.batch_per_job, quota_per_table_day=config.quota_jobs_per_table_day,
        pace_jobs=config.quota_jobs_per_table_10s, lease_seconds=config.lease_seconds, **kw,
    )
