"""The settings the ship and commit stages run by, built once from the configuration.

:class:`Settings` is frozen and holds the defaults: ``Config`` takes its
own defaults from here, ``Config.settings()`` builds one, and the
``Drainer``, the ship stage and the ``Committer`` are given it whole, so no
default or mapping of a setting is written twice.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    prefix: str = "bqspool"  # the folder of the bucket everything lives under
    # Large backlogs ship as several batches, each uploaded while the next
    # is staged, with at most two staged files on the disk (in memory, on
    # Cloud Run): each about target_bytes.
    batch_rows: int = 1_000_000  # most events in one batch (Parquet row groups of 65,536 inside it)
    batch_bytes: int = 256 * 1024 * 1024  # most stored payload bytes in one batch
    # A stream ships when its pending events would fill an object of target_bytes
    # of Parquet (BigQuery's guidance for row groups), or when its oldest is
    # max_delay old. Each object costs about one class A request, so these set
    # the bill: see docs/deploy.md, "Freshness against cost", for the arithmetic
    # behind 9 minutes (with the 90-s commit schedule, a p95 delay under 10).
    target_bytes: int = 16 * 1024 * 1024
    max_delay: float = 540.0
    per_job: int = 500  # most objects (source URIs) in one load job
    jobs_per_table_day: int = 1000  # the load-job budget, under BigQuery's 1,500
    jobs_per_table_10s: int | None = None  # pacing; None: the warehouse's own limit
    lease_seconds: float = 120.0  # of the buffer's and of the bucket's lease
    # A committer whose clock is further than this from the storage server's
    # refuses to commit: everything it decides is on the server's clock, and a
    # host that far off has a clock problem worth fixing before it acts.
    max_clock_skew: float = 30.0


DEFAULTS = Settings()
