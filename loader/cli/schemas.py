"""Schema and configuration commands: ``schemas check|show`` and ``config show``."""

from __future__ import annotations

import json

import click
from bqspool.schemas import load_schema_set
from bqspool.schemas.bigquery import schema_to_json, table_to_json

from ..text import counted
from .base import fail, main, settings


@main.group()
def schemas() -> None:
    """Check and show schema sets."""


@schemas.command("check")
@click.argument("directory")
def schemas_check(directory: str) -> None:
    """Validate every table file of DIRECTORY (or a bundled set's name)."""
    sset = load_schema_set(directory)
    for table in sset.tables():
        part = table.partitioning
        extra = f"partitioned by {part.type} on {part.field}" if part else "not partitioned"
        click.echo(f"ok  {table.name}: {len(table.fields)} columns, {extra}")
    click.echo(f"{counted(len(sset), 'table')} valid in {sset.source}")


@schemas.command("show")
@click.argument("name")
@click.argument("table", required=False)
@click.option("--rest", is_flag=True, help="Print full REST Table resources, options included.")
def schemas_show(name: str, table: str | None, rest: bool) -> None:
    """Print the BigQuery JSON schema of set NAME (or of one TABLE in it)."""
    sset = load_schema_set(name)
    names = [table] if table else list(sset)
    if table and table not in sset:
        fail(f"set {name!r} has no table {table!r} (tables: {', '.join(sset)})")
    out = {n: table_to_json(sset[n], "PROJECT", "DATASET") if rest else schema_to_json(sset[n]) for n in names}
    click.echo(json.dumps(out[table] if table else out, indent=2))


# -- the loader ---------------------------------------------------------------


@main.group()
def config() -> None:
    """Inspect the loader configuration."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: each value with its source.")
def config_show(as_json: bool) -> None:
    """Print the effective configuration and where each value came from."""
    cfg = settings()
    values = cfg.public()
    if as_json:
        click.echo(json.dumps({k: {"value": v, "source": cfg.sources[k]} for k, v in values.items()}, indent=2))
        return
    # Columns as wide as their longest entry: long keys and values stay aligned.
    from ..config import key_name

    key_w = max((len(key_name(k)) for k in values), default=0)
    val_w = min(60, max((len(str(v)) for v in values.values()), default=0))
    for key, value in values.items():  # named as bqspool.toml spells them: ship.max_delay
        click.echo(f"{key_name(key):{key_w}s}  {value!s:{val_w}s}  ({cfg.sources[key]})")
