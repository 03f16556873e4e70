"""The BigQuery adapter of :class:`~.interfaces.Warehouse`: load jobs.

Load jobs are idempotent by job id: always look a job up (in the configured
location) before inserting it, and treat a 409 on insert as "look it up".
The emulator runs a duplicate job id again instead of answering 409, so the
look-up is what keeps a retried drain from loading twice. BigQuery's error
dicts become neutral JobErrors (:mod:`.interfaces`) here; datasets and
tables are in :mod:`.bq_tables`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from google.api_core import exceptions as gexc

from ..billing import RequestCounts
from ..interfaces import JobError, JobFailure, JobOutcome, WarehouseLimits
from ..labels import load_labels
from ..retry import RetryPolicy
from .bq_queries import QueriesMixin
from .bq_tables import TablesMixin
from .google_errors import TRANSIENT_REASONS
from .meter import Meter, bigquery_operation

log = logging.getLogger("bqspool.loader")

POLL_FIRST_S, POLL_MAX_S = 0.1, 2.0  # polling a running load job (see BigQueryWarehouse.wait)


def job_error(error_result: dict | None) -> JobError | None:
    """BigQuery's error dict as a neutral JobError: the backend's fault or the data's."""
    if not error_result:
        return None
    reason = str(error_result.get("reason") or "unknown")
    kind: JobFailure = "backend" if reason in TRANSIENT_REASONS else "data"
    return JobError(kind, reason, str(error_result.get("message") or ""))


def _outcome(job) -> JobOutcome:
    uris = getattr(job, "source_uris", None)
    return JobOutcome(
        job.job_id,
        job.state == "DONE",
        job_error(job.error_result),
        getattr(job, "output_rows", None),
        tuple(uris) if uris else None,
    )


class BigQueryWarehouse(TablesMixin, QueriesMixin):
    """A dataset in one location; its limits are BigQuery's documented ones."""

    limits = WarehouseLimits(jobs_per_table_day=1500, jobs_per_table_10s=5, uris_per_job=10_000)

    def __init__(
        self,
        client,
        project: str,
        dataset: str,
        location: str,
        retry: RetryPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.client = client
        self.project, self.dataset, self.location = project, dataset, location
        self.retry = retry
        self.clock, self.sleep = clock, sleep
        self.meter = Meter(bigquery_operation)
        self.meter.install(client)
        # Every job's labels (loader/labels.py); the table's is added per load job.
        self.labels: dict[str, str] = {}
        self.kms_key: str | None = None  # tables are created, and load into, with this key (CMEK)
        # The key a table loads into (clients.configure: its own, else the configured one).
        self.key_for: Callable[[str], str | None] = lambda table: self.kms_key
        # What the client was built with (google_clients), kept to say so: where jobs run, and as whom.
        self.job_project: str | None = project
        self.principal: str | None = None

    @property
    def requests(self) -> RequestCounts:
        """What this warehouse sent: jobs inserted, looked up, queries, table administration."""
        return self.meter.requests

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
        config.labels = load_labels(self.labels, table)
        if key := self.key_for(table):
            config.destination_encryption_configuration = bigquery.EncryptionConfiguration(kms_key_name=key)

        def attempt():
            # Look up before every insert, retries included: an insert that
            # timed out may have created the job (the emulator would run a
            # duplicate id again instead of answering 409).
            existing = self._lookup(job_id)
            if existing is not None:
                return existing
            try:
                job = self.client.load_table_from_uri(
                    uris,
                    self.table_ref(table),
                    job_id=job_id,
                    location=self.location,
                    job_config=config,
                    retry=None,
                    timeout=60,
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
