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
    schedule = "5m"            # an interval (30s, 5m, 1h) or a cron line ("*/5 * * * *")

    [batch]
    rows = 500000              # most rows in one batch (one Parquet file)
    bytes = 268435456          # most stored payload bytes in one batch
    per_job = 500              # most batches (source URIs) in one load job

    [retry]
    initial = 1.0              # first backoff, seconds
    maximum = 60.0             # longest backoff
    deadline = 300.0           # give up on a step after this long

    [quota]
    jobs_per_table_day = 1000  # our budget under BigQuery's 1,500

Every key can be overridden by an environment variable: ``BQSPOOL_`` plus
the key in capitals, sections joined with ``_`` (``BQSPOOL_BATCH_ROWS``).
Credentials never come from here: the Google clients use Application
Default Credentials, or anonymous credentials against the local emulators.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bqspool.schemas.errors import ConfigError

CONFIG_FILE = "bqspool.toml"
_INTERVAL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


@dataclass(frozen=True)
class Config:
    buffer: str = ".bqspool/buffer.db"
    schemas: str | None = None
    project: str | None = None
    dataset: str | None = None
    location: str = "US"
    bucket: str | None = None
    prefix: str = "bqspool"
    schedule: str = "5m"
    batch_rows: int = 500_000
    batch_bytes: int = 256 * 1024 * 1024
    batch_per_job: int = 500
    retry_initial: float = 1.0
    retry_maximum: float = 60.0
    retry_deadline: float = 300.0
    quota_jobs_per_table_day: int = 1000
    lease_seconds: float = 120.0
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def require(self, *names: str) -> None:
        """Raise ConfigError naming every missing setting among ``names``."""
        missing = [n for n in names if getattr(self, n) in (None, "")]
        if missing:
            envs = ", ".join(f"BQSPOOL_{n.upper()}" for n in missing)
            raise ConfigError(f"missing setting(s) {', '.join(missing)}: set them in {CONFIG_FILE} or {envs}")

    def schedule_seconds(self) -> float | None:
        """The schedule as an interval in seconds, or None for a cron line."""
        m = _INTERVAL_RE.fullmatch(self.schedule)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else None

    def public(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sources"}


_FIELDS = {f.name: f for f in dataclasses.fields(Config) if f.name != "sources"}


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
            out = float(value)
            if out <= 0:
                raise ValueError("must be positive")
            return out
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} from {source}: {value!r} is not valid ({exc})") from None
    if not isinstance(value, str):
        raise ConfigError(f"{name} from {source}: expected a string, got {value!r}")
    return value


def load_config(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Config:
    """The effective configuration, with ``sources`` naming where each value came from."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources = {name: "default" for name in _FIELDS}
    explicit = path or env.get("BQSPOOL_CONFIG")
    file = Path(explicit) if explicit else Path(CONFIG_FILE)
    if explicit and not file.exists():
        raise ConfigError(f"config file {file} does not exist")
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: {exc}") from exc
        for name, value in _flatten(data).items():
            if name not in _FIELDS:
                raise ConfigError(f"{file}: unknown setting {name!r} (known: {', '.join(sorted(_FIELDS))})")
            values[name] = _convert(name, value, str(file))
            sources[name] = str(file)
    for name in _FIELDS:
        var = f"BQSPOOL_{name.upper()}"
        if var in env and env[var] != "":
            values[name] = _convert(name, env[var], var)
            sources[name] = var
    config = Config(**values, sources=sources)
    if config.schedule_seconds() is None:
        _check_cron(config.schedule)
    if config.batch_per_job > 10_000:
        raise ConfigError("batch_per_job: a load job takes at most 10,000 source URIs")
    return config


def _check_cron(expr: str) -> None:
    try:
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger.from_crontab(expr)
    except ImportError:  # pragma: no cover - the loader extra brings it
        raise ConfigError("a cron schedule needs the loader extra: pip install 'bqspool[loader]'") from None
    except ValueError as exc:
        raise ConfigError(f"schedule {expr!r} is neither an interval (30s, 5m, 1h) nor a cron line: {exc}") from None
