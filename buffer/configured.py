"""Where the buffer and its schema set are, when the caller does not say: one resolution for everyone.

The same order the loader's configuration follows (``bqspool.loader.config``):
defaults, then ``bqspool.toml`` in the working directory (or the file named
by ``BQSPOOL_CONFIG``), then ``BQSPOOL_BUFFER`` / ``BQSPOOL_SCHEMAS``. Only
the two settings a writer needs are read here, with the standard library
alone: the embeddable writer stays light.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from bqspool.schemas.errors import ConfigError

CONFIG_FILE = "bqspool.toml"
DEFAULT_BUFFER = ".bqspool/buffer.db"


def config_file(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """The configuration file in force: ``path``, else ``BQSPOOL_CONFIG``, else
    ``./bqspool.toml`` if it exists; None when there is none. ConfigError when a
    file named explicitly does not exist."""
    env = os.environ if env is None else env
    explicit = path or env.get("BQSPOOL_CONFIG")
    if explicit:
        if not Path(explicit).exists():
            raise ConfigError(f"config file {explicit} does not exist")
        return Path(explicit)
    return Path(CONFIG_FILE) if Path(CONFIG_FILE).exists() else None


def read_file(file: Path) -> dict:
    """The file's TOML, or ConfigError naming the file and what is wrong."""
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: {exc}") from exc


def writer_settings(env: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """(buffer path, schema set or None) as configured."""
    env = os.environ if env is None else env
    file = config_file(env=env)
    data = read_file(file) if file is not None else {}
    buffer = env.get("BQSPOOL_BUFFER") or data.get("buffer") or DEFAULT_BUFFER
    schemas = env.get("BQSPOOL_SCHEMAS") or data.get("schemas")
    if not isinstance(buffer, str) or (schemas is not None and not isinstance(schemas, str)):
        raise ConfigError(f"{file}: buffer and schemas must be strings")
    return buffer, schemas
