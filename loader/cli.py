"""The ``bqspool`` command: a thin layer over the library.

Every command takes its buffer path and schema set from options or from
``BQSPOOL_BUFFER`` / ``BQSPOOL_SCHEMAS``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from bqspool.schemas import load_schema_set
from bqspool.schemas.bigquery import schema_to_json, table_to_json
from bqspool.schemas.errors import BqspoolError, ValidationError
from bqspool.schemas.registry import bundled_names

DEFAULT_BUFFER = ".bqspool/buffer.db"


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


buffer_option = click.option(
    "--buffer",
    "buffer_path",
    envvar="BQSPOOL_BUFFER",
    default=DEFAULT_BUFFER,
    show_default=True,
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Buffer file.",
)
schemas_option = click.option(
    "--schemas",
    envvar="BQSPOOL_SCHEMAS",
    show_envvar=True,
    help=f"Schema set: a directory of table files or a bundled name ({', '.join(bundled_names())}).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="bqspool")
def main(verbose: int) -> None:
    """bqspool: a durable local spool for BigQuery."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _open_buffer(path: Path, schemas: str | None, **kw: Any):
    from bqspool.buffer import Buffer

    try:
        return Buffer(path, schemas, **kw)
    except BqspoolError as exc:
        _fail(str(exc))


@main.command()
@click.argument("stream")
@buffer_option
@schemas_option
@click.option("--dead-letter", is_flag=True,
              help="Also store bad lines, as dead-letter rows with their reason.")
def append(stream: str, buffer_path: Path, schemas: str | None, dead_letter: bool) -> None:
    """Append NDJSON events from stdin to STREAM.

    Good lines are stored; each bad line is reported on stderr with its line
    number and reason (and, with --dead-letter, kept as a dead letter).
    Exits 1 if any line was bad, 0 otherwise.
    """
    if not schemas:
        _fail("append needs a schema set: --schemas or BQSPOOL_SCHEMAS")
    buf = _open_buffer(buffer_path, schemas)
    good = bad = 0
    chunk: list[Any] = []

    def flush_chunk() -> None:
        nonlocal good
        if chunk:
            buf.append_many(stream, chunk)
            chunk.clear()

    try:
        for lineno, line in enumerate(sys.stdin.buffer, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                bad += 1
                click.echo(f"line {lineno}: invalid JSON: {exc}", err=True)
                if dead_letter:
                    buf.dead_letter(stream, line.decode("utf-8", "backslashreplace"), f"line {lineno}: invalid JSON: {exc}")
                continue
            try:
                buf.validate(stream, event)
            except ValidationError as exc:
                bad += 1
                click.echo(f"line {lineno}: {exc}", err=True)
                if not dead_letter:
                    continue
            else:
                good += 1
            chunk.append(event)
            if len(chunk) >= 1000:
                flush_chunk()
        flush_chunk()
    except BqspoolError as exc:
        buf.close()
        _fail(f"{exc} (events before this point were stored)")
    buf.close()
    click.echo(f"{good} events appended to {stream}, {bad} bad lines", err=True)
    sys.exit(1 if bad else 0)


@main.command()
@buffer_option
@schemas_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(buffer_path: Path, schemas: str | None, as_json: bool) -> None:
    """Pending events per stream, dead letters, drops and file size."""
    if not buffer_path.exists():
        _fail(f"no buffer at {buffer_path} (set --buffer or BQSPOOL_BUFFER)")
    buf = _open_buffer(buffer_path, schemas)
    try:
        stats = buf.stats()
    finally:
        buf.close()
    if as_json:
        click.echo(json.dumps(stats, indent=2, sort_keys=True))
        return
    click.echo(f"buffer  {stats['path']}  ({stats['file_bytes'] / 1e6:.1f} MB on disk, format {stats['format_version']})")
    click.echo(f"{'stream':40s} {'pending':>10s} {'bytes':>12s} {'oldest':>10s}")
    for name, s in sorted(stats["streams"].items()):
        age = "-" if s["oldest_age_s"] is None else f"{s['oldest_age_s']:.0f}s"
        click.echo(f"{name:40s} {s['pending']:>10d} {s['bytes']:>12d} {age:>10s}")
    click.echo(f"{'total':40s} {stats['pending']:>10d} {stats['pending_bytes']:>12d}")
    click.echo(f"dead letters: {stats['dead_letters']}   dropped: {stats['dropped']}")
    if stats["recovered_from"]:
        click.echo(f"warning: a corrupt buffer was moved aside to {stats['recovered_from']}")


@main.group()
def schemas() -> None:
    """Check and show schema sets."""


@schemas.command("check")
@click.argument("directory")
def schemas_check(directory: str) -> None:
    """Validate every table file of DIRECTORY (or a bundled set's name)."""
    try:
        sset = load_schema_set(directory)
    except BqspoolError as exc:
        _fail(str(exc))
    for table in sset.tables():
        part = table.partitioning
        extra = f"partitioned by {part.type} on {part.field}" if part else "not partitioned"
        click.echo(f"ok  {table.name}: {len(table.fields)} columns, {extra}")
    click.echo(f"{len(sset)} tables valid in {sset.source}")


@schemas.command("show")
@click.argument("name")
@click.argument("table", required=False)
@click.option("--rest", is_flag=True, help="Print full REST Table resources, options included.")
def schemas_show(name: str, table: str | None, rest: bool) -> None:
    """Print the BigQuery JSON schema of set NAME (or of one TABLE in it)."""
    try:
        sset = load_schema_set(name)
    except BqspoolError as exc:
        _fail(str(exc))
    names = [table] if table else list(sset)
    if table and table not in sset:
        _fail(f"set {name!r} has no table {table!r} (tables: {', '.join(sset)})")
    out = {
        n: table_to_json(sset[n], "PROJECT", "DATASET") if rest else schema_to_json(sset[n]) for n in names
    }
    click.echo(json.dumps(out[table] if table else out, indent=2))
