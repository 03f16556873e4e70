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
    # One Parquet row group per object: large backlogs ship as several
    # batches, each uploaded while the next is staged, with at most two
    # small staged files on the disk (in memory, on Cloud Run).
    batch_rows: int = 65_536  # most events in one batch
    batch_bytes: int = 256 * 1024 * 1024  # most stored payload bytes in one batch
    per_job: int = 500  # most objects (source URIs) in one load job
    jobs_per_table_day: int = 1000  # the load-job budget, under BigQuery's 1,500
    jobs_per_table_10s: int | None = None  # pacing; None: the warehouse's own limit
    lease_seconds: float = 120.0  # of the buffer's and of the bucket's lease
    # A committer whose clock is further than this from the storage server's
    # refuses to commit: everything it decides is on the server's clock, and a
    # host that far off has a clock problem worth fixing before it acts.
    max_clock_skew: float = 30.0


DEFAULTS = Settings()
