"""The command group, shared options and helpers, and the one map from errors to exit codes."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from bqspool.schemas.errors import BqspoolError, LeaseHeldError, LeaseLostError
from bqspool.schemas.registry import bundled_names

from ..config import DEFAULT_BUFFER

# Exit codes, for scripts and schedulers. Retryable (3, 4) means: nothing was
# lost, run the same command again later.
EXIT_ERROR = 1  # a permanent error: configuration, bad input, a refused request
EXIT_QUARANTINE = 2  # drain: a batch is held back; see `bqspool quarantine list`
EXIT_RETRY = 3  # something that passes: a backend unreachable, a full disk, a locked file
EXIT_LEASE = 4  # another loader holds the buffer, or took it over from this one
EXIT_UNDRAINABLE = 5  # drain: a stream has pending events but no table in the schema set


def exit_code(exc: BqspoolError) -> int:
    """The exit code of a command that failed with ``exc``."""
    if isinstance(exc, (LeaseHeldError, LeaseLostError)):
        return EXIT_LEASE
    return EXIT_RETRY if exc.retryable else EXIT_ERROR


class Cli(click.Group):
    """A group whose commands raise bqspool errors; they become a message and an exit code here."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BqspoolError as exc:
            click.echo(f"error: {exc}", err=True)
            if exc.retryable:
                click.echo("nothing was lost: run the command again once it passes", err=True)
            ctx.exit(exit_code(exc))


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Stop with ``message`` on stderr, for what is not an exception of ours (a missing option)."""
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
config_option = click.option(
    "--config",
    "config_path",
    envvar="BQSPOOL_CONFIG",
    type=click.Path(dir_okay=False),
    help="Configuration file (default: ./bqspool.toml if present).",
)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar="BQSPOOL_LOG_FORMAT",
    show_envvar=True,
    help="Log lines as text, or one JSON object per line.",
)
@click.version_option(package_name="bqspool")
def main(verbose: int, log_format: str) -> None:
    """bqspool: a durable local spool for BigQuery."""
    from bqspool.loader.logs import setup

    setup(logging.WARNING - 10 * min(verbose, 2), log_format)


def open_buffer(path: Path, schemas: str | None, **kw: Any):
    from bqspool.buffer import Buffer

    return Buffer(path, schemas, **kw)


def existing_buffer(path: Path) -> Path:
    if not path.exists():
        fail(f"no buffer at {path} (set --buffer or BQSPOOL_BUFFER)")
    return path


def load_config(config_path: str | None):
    from bqspool.loader.config import load_config as load
    from bqspool.loader.logs import redact

    cfg = load(config_path)
    redact(*cfg.secrets())  # what the configuration holds secret never reaches a log line
    return cfg
