"""Loader configuration: defaults, then ``bqspool.toml``, then ``BQSPOOL_*``.

``bqspool.toml`` (in the working directory, or the file named by
``--config`` / ``BQSPOOL_CONFIG``)::

    buffer = ".bqspool/buffer.db"
    schemas = "leafloaf"
    project = "my-project"
    dataset = "analytics"
    location = "US"
    bucket = "my-spool-bucket"
    prefix = "bqspool"
    schedule = "90s"           # the commit's: an interval (30s, 5m, 1h) or a cron line ("*/5 * * * *")
    lease_seconds = 120        # the buffer's and the committer's lease
    max_clock_skew = 30        # a committer whose clock is further off the storage server's commits nothing
    job_project = "jobs-project"  # load jobs, lookups and queries run and count here (default: project)
    impersonate_service_account = "bqspool@my-project.iam.gserviceaccount.com"  # keyless: short-lived tokens

    [ship]                     # when a stream ships (docs/deploy.md, "Freshness against cost")
    target_bytes = 16777216    # when its pending events would fill an object this big (Parquet)
    max_delay = "9m"           # or when its oldest event is this old
    check = "10s"              # how often `run` and the in-process Shipper look (no request)

    [batch]
    rows = 1000000             # most rows in one batch (one Parquet file, row groups of 65,536)
    bytes = 268435456          # most stored payload bytes in one batch
    per_job = 500              # most batches (source URIs) in one load job

    [retry]
    initial = 1.0              # first backoff, seconds
    maximum = 60.0             # longest backoff
    deadline = 300.0           # give up on a step after this long

    [quota]
    jobs_per_table_day = 1000  # our budget under BigQuery's 1,500
    jobs_per_table_10s = 5     # load jobs per table per 10 s; default: the warehouse's limit (BigQuery: 5)

    [archive]                  # loaded objects under PREFIX/archive/ (`setup` applies this)
    coldline_days = 30         # move to COLDLINE after this many days
    delete_days = 3650         # delete after this many days; unset: never

    [monitor]                  # `bqspool monitor`'s thresholds; the seed's values are the defaults
    no_data_minutes = 15
    error_rate = 0.01
    null_columns = ["user_search_events.user_id"]
    webhook = "https://chat.example/hooks/..."  # Slack-compatible; a secret: output masks it
    token = "..."              # `monitor --serve` asks for it on the page and /metrics; a secret too

    [price]                    # USD list prices `bqspool cost` uses; defaults dated by as_of
    as_of = "2026-11-01"
    streaming_per_200mib = 0.01
    storage_write_per_gib = 0.025
    storage_write_free_tib = 2.0
    active_storage_gib_month = 0.02
    long_term_storage_gib_month = 0.01
    query_per_tib = 6.25
    gcs_standard_gib_month = 0.02    # also gcs_nearline_, gcs_coldline_, gcs_archive_gib_month
    gcs_class_a_per_1000 = 0.005     # uploads, listings, the commit log's writes
    gcs_class_b_per_1000 = 0.0004    # reads, stats
    gcs_coldline_class_a_per_1000 = 0.02  # each archive file's lifecycle move to COLDLINE
    pubsub_throughput_per_tib = 40.0 # and pubsub_bigquery_per_tib = 50.0: the comparison's

Every key can be overridden by an environment variable: ``BQSPOOL_`` plus
the key in capitals, sections joined with ``_`` (``BQSPOOL_BATCH_ROWS``).
Credentials never come from here: the Google clients use Application
Default Credentials, or anonymous credentials against the local emulators.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bqspool.buffer.configured import CONFIG_FILE, DEFAULT_BUFFER, config_file, read_file
from bqspool.schemas.definition import KMS_KEY_FORM, KMS_KEY_RE
from bqspool.schemas.errors import ConfigError

from .settings import DEFAULTS, Settings

_INTERVAL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def interval_seconds(text: str) -> float | None:
    """An interval (``30s``, ``5m``, ``1h``, ``2d``, or bare seconds) in seconds; None if ``text`` is not one."""
    m = _INTERVAL_RE.fullmatch(text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


@dataclass(frozen=True)
class Config:
    buffer: str = DEFAULT_BUFFER
    schemas: str | None = None
    project: str | None = None
    dataset: str | None = None
    location: str = "US"
    bucket: str | None = None
    prefix: str = DEFAULTS.prefix
    schedule: str = "90s"  # the commit schedule of `bqspool run`
    ship_target_bytes: int = DEFAULTS.target_bytes
    ship_max_delay: str = "9m"  # an interval: 30s, 9m, 1h
    ship_check: str = "10s"
    # What the ship and commit stages run by: the defaults and their reasons are in settings.py.
    batch_rows: int = DEFAULTS.batch_rows
    batch_bytes: int = DEFAULTS.batch_bytes
    batch_per_job: int = DEFAULTS.per_job
    retry_initial: float = 1.0
    retry_maximum: float = 60.0
    retry_deadline: float = 300.0
    quota_jobs_per_table_day: int = DEFAULTS.jobs_per_table_day
    quota_jobs_per_table_10s: int | None = DEFAULTS.jobs_per_table_10s
    lease_seconds: float = DEFAULTS.lease_seconds
    max_clock_skew: float = DEFAULTS.max_clock_skew  # seconds; a committer further off refuses to commit
    job_project: str | None = None  # where load jobs, lookups and queries run and count (default: project)
    kms_key: str | None = None  # a customer-managed key for every object, table and load job bqspool writes
    impersonate_service_account: str | None = None  # act as this service account, by short-lived tokens
    archive_coldline_days: int = 30  # loaded objects move to COLDLINE after this many days
    archive_delete_days: int | None = None  # and are deleted after this many; None: kept for ever
    # List prices in USD, as of price_as_of; `bqspool cost` computes with them.
    price_as_of: str = "2026-11-01"
    price_streaming_per_200mib: float = 0.01  # legacy streaming inserts, each row counted as >= 1 KB
    price_storage_write_per_gib: float = 0.025  # Storage Write API, after the free amount
    price_storage_write_free_tib: float = 2.0  # a month
    price_active_storage_gib_month: float = 0.02  # BigQuery logical storage
    price_long_term_storage_gib_month: float = 0.01
    price_query_per_tib: float = 6.25  # on-demand queries
    price_gcs_standard_gib_month: float = 0.02
    price_gcs_nearline_gib_month: float = 0.01
    price_gcs_coldline_gib_month: float = 0.004
    price_gcs_archive_gib_month: float = 0.0012
    price_gcs_class_a_per_1000: float = 0.005  # insert, copy, rewrite, compose, list, patch (STANDARD)
    price_gcs_class_b_per_1000: float = 0.0004  # get, metadata (STANDARD)
    price_gcs_coldline_class_a_per_1000: float = 0.02  # a lifecycle move to COLDLINE is one of these
    price_pubsub_throughput_per_tib: float = 40.0  # Pub/Sub publishing, for the comparison
    price_pubsub_bigquery_per_tib: float = 50.0  # a BigQuery subscription's writes, for the comparison
    # `bqspool monitor`: the seed's alert rules, translated (docs/operations.md)
    monitor_window_minutes: float = 60.0  # the window error rate and delay are measured over
    monitor_no_data_minutes: float = 15.0  # critical: nothing loaded this long while events wait
    monitor_error_rate: float = 0.01  # critical: dead-lettered + quarantined over events
    monitor_table_bytes: int = 10**12  # critical: a table over 1 TB
    monitor_query_seconds: float = 30.0  # critical: a query job ran longer
    monitor_buffer_full: float = 0.9  # critical: the buffer within 10% of its size cap
    buffer_max_bytes: int = 1024**3  # the size cap the app's Buffer uses (its default: 1 GiB)
    monitor_delay_p95_minutes: float = 10.0  # warning: p95 append-to-loaded delay
    monitor_daily_cost_usd: float = 50.0  # warning: estimated daily cost
    monitor_null_rate: float = 0.05  # warning: NULLs in the columns named below
    monitor_null_columns: str | None = None  # "table.column, ...", or a TOML list
    monitor_job_budget: float = 0.8  # warning: load-job budget used in 24 h
    metrics_address: str | None = None  # `bqspool run` serves /metrics here (HOST:PORT)
    metrics_textfile: str | None = None  # `drain --once` writes its metrics here (node_exporter's textfile)
    monitor_webhook: str | None = None  # JSON POST with a `text` field (Slack's incoming webhooks): a secret
    monitor_token: str | None = None  # `monitor --serve`: a bearer token the page and /metrics ask for: a secret
    monitor_state: str = ".bqspool/monitor.json"  # what fired, for notifying once; the page's history
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def require(self, *names: str) -> None:
        """Raise ConfigError naming every missing setting among ``names``."""
        missing = [n for n in names if getattr(self, n) in (None, "")]
        if missing:
            envs = ", ".join(f"BQSPOOL_{n.upper()}" for n in missing)
            raise ConfigError(f"missing setting(s) {', '.join(missing)}: set them in {CONFIG_FILE} or {envs}")

    def schedule_seconds(self) -> float | None:
        """The schedule as an interval in seconds, or None for a cron line."""
        return interval_seconds(self.schedule)

    def settings(self) -> Settings:
        """What the ship and commit stages run by, from this configuration."""
        return Settings(
            prefix=self.prefix,
            batch_rows=self.batch_rows,
            batch_bytes=self.batch_bytes,
            per_job=self.batch_per_job,
            jobs_per_table_day=self.quota_jobs_per_table_day,
            jobs_per_table_10s=self.quota_jobs_per_table_10s,
            lease_seconds=self.lease_seconds,
            max_clock_skew=self.max_clock_skew,
            target_bytes=self.ship_target_bytes,
            max_delay=self.seconds("ship_max_delay"),
        )

    def seconds(self, name: str) -> float:
        """An interval setting (``ship_max_delay``, ``ship_check``) in seconds."""
        found = interval_seconds(getattr(self, name))
        assert found is not None, f"{name} was checked when the configuration was loaded"
        return found

    def public(self, *, reveal: bool = False) -> dict[str, Any]:
        """Every setting by name; secrets masked unless ``reveal`` (see :func:`masked`)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sources"}
        if not reveal:
            out.update({k: masked(out[k]) for k in SECRETS if out[k]})
        return out

    def secrets(self) -> list[str]:
        """The secret values set, for the logs to hide."""
        return [v for k in SECRETS if (v := getattr(self, k))]


_FIELDS = {f.name: f for f in dataclasses.fields(Config) if f.name != "sources"}
SECRETS = ("monitor_webhook", "monitor_token")  # never printed whole: `config show`, logs, --json


def masked(value: str) -> str:
    """A secret as output shows it: a URL's scheme and host, nothing of its path or query; else ``***``."""
    parts = urlsplit(value)
    return f"{parts.scheme}://{parts.hostname}/***" if parts.scheme and parts.hostname else "***"


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}_"))
        else:
            out[name] = value
    return out


def _convert(name: str, value: Any, source: str) -> Any:
    typ = _FIELDS[name].type
    try:
        if "int" in str(typ) and not isinstance(value, bool):
            out = int(value)
            if out <= 0:
                raise ValueError("must be positive")
            return out
        if "float" in str(typ) and not isinstance(value, bool):
            real = float(value)
            if real <= 0:
                raise ValueError("must be positive")
            return real
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} from {source}: {value!r} is not valid ({exc})") from None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    if not isinstance(value, str):
        raise ConfigError(f"{name} from {source}: expected a string, got {value!r}")
    return value


SECTIONS = ("ship", "batch", "retry", "quota", "archive", "monitor", "price")


def key_name(name: str) -> str:
    """A setting as bqspool.toml spells it: ``ship.max_delay`` for ``ship_max_delay``."""
    section, _, rest = name.partition("_")
    return f"{section}.{rest}" if section in SECTIONS and rest else name


def _unknown(file: Path, name: str) -> ConfigError:
    """An unknown key, named as the file has it, with the nearest known ones."""
    import difflib

    known = [key_name(n) for n in _FIELDS]
    near = difflib.get_close_matches(key_name(name), known, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(near)}?)" if near else " (`bqspool config show` lists every setting)"
    return ConfigError(f"{file}: unknown setting {key_name(name)!r}{hint}")


def load_config(
    path: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """The effective configuration, with ``sources`` naming where each value came
    from: defaults, then the file, then ``BQSPOOL_*`` in ``env``, then ``overrides``
    (a command's flags: ``{"buffer": ...}``), the last one winning."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources = {name: "default" for name in _FIELDS}
    file = config_file(path, env)  # the one way every command and Buffer() find it
    if file is not None:
        for name, value in _flatten(read_file(file)).items():
            if name not in _FIELDS:
                raise _unknown(file, name)
            values[name] = _convert(name, value, str(file))
            sources[name] = str(file)
    for name in _FIELDS:
        var = f"BQSPOOL_{name.upper()}"
        if var in env and env[var] != "":
            values[name] = _convert(name, env[var], var)
            sources[name] = var
    for name, value in (overrides or {}).items():
        values[name] = _convert(name, value, f"--{name}")
        sources[name] = f"--{name}"
    config = Config(**values, sources=sources)
    if config.schedule_seconds() is None:
        _check_cron(config.schedule)
    for name in ("ship_max_delay", "ship_check"):
        if not interval_seconds(getattr(config, name)):
            raise ConfigError(
                f"{name} {getattr(config, name)!r} (from {sources[name]}): not an interval above 0 (30s, 9m, 1h)"
            )
    if config.batch_per_job > 10_000:
        raise ConfigError("batch_per_job: a load job takes at most 10,000 source URIs")
    _check_names(config)
    return config


# GCS bucket names: 3-63 characters of lowercase letters, digits, -, _ and .,
# starting and ending with a letter or digit (dotted names may be longer,
# up to 222, in parts of at most 63).
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_DATASET_RE = re.compile(r"[A-Za-z0-9_]{1,1024}")
_PROJECT_RE = re.compile(r"[a-z][a-z0-9.:-]{2,62}[a-z0-9]|[a-z0-9-]+")
# Prefix parts: no '=' (the emulator and BigQuery's hive partitioning read
# key=value folders as columns), no '..' or '.' (fake-gcs-server writes
# object names as paths), nothing but safe characters.
_PREFIX_PART_RE = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def _check_names(config: Config) -> None:
    """Refuse names that would misroute data, with the setting and its source named."""

    def bad(name: str, why: str) -> ConfigError:
        return ConfigError(f"{name} {getattr(config, name)!r} (from {config.sources.get(name, 'default')}): {why}")

    if config.bucket is not None:
        if (
            not _BUCKET_RE.fullmatch(config.bucket)
            or ".." in config.bucket
            or any(len(p) > 63 for p in config.bucket.split("."))
        ):
            raise bad("bucket", "not a valid bucket name (3-63 lowercase letters, digits, '-', '_' and '.')")
    if config.dataset is not None and not _DATASET_RE.fullmatch(config.dataset):
        raise bad("dataset", "a dataset name has only letters, digits and underscores")
    for name in ("project", "job_project"):
        value = getattr(config, name)
        if value is not None and not _PROJECT_RE.fullmatch(value):
            raise bad(name, "not a valid project id")
    key = config.kms_key
    if key is not None and not KMS_KEY_RE.fullmatch(key):
        raise bad("kms_key", f"not a key's name ({KMS_KEY_FORM})")
    account = config.impersonate_service_account
    if account is not None and not re.fullmatch(
        r"[a-z][a-z0-9-]{4,28}[a-z0-9]@[\w.-]+\.iam\.gserviceaccount\.com", account
    ):
        raise bad("impersonate_service_account", "not a service account's email (NAME@PROJECT.iam.gserviceaccount.com)")
    parts = config.prefix.strip("/").split("/")
    if config.prefix.startswith("/") or not all(_PREFIX_PART_RE.fullmatch(p) and p not in (".", "..") for p in parts):
        raise bad(
            "prefix",
            "use folder names of letters, digits, '_', '-' and '.', joined by '/' "
            "(no leading '/', no '.' or '..' parts, no '=')",
        )


def _check_cron(expr: str) -> None:
    try:
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger.from_crontab(expr)
    except ImportError:  # pragma: no cover - the loader extra brings it
        raise ConfigError("a cron schedule needs the loader extra: pip install 'bqspool[loader]'") from None
    except ValueError as exc:
        raise ConfigError(f"schedule {expr!r} is neither an interval (30s, 5m, 1h) nor a cron line: {exc}") from None
