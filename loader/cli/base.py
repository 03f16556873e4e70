"""The command group, shared options and helpers, and the one map from errors to exit codes."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from bqspool.schemas.errors import BqspoolError, LeaseHeldError, LeaseLostError
from bqspool.schemas.registry import bundled_names

from .. import exit_codes
from ..config import DEFAULT_BUFFER

# Exit codes, for scripts and schedulers: the one table is loader/exit_codes.py.
EXIT_ERROR = exit_codes.ERROR
EXIT_QUARANTINE = exit_codes.QUARANTINE
EXIT_RETRY = exit_codes.RETRY
EXIT_LEASE = exit_codes.LEASE
EXIT_UNDRAINABLE = exit_codes.UNDRAINABLE
EXIT_FOUND = exit_codes.FOUND


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


role_option = click.option(
    "--role",
    type=click.Choice(["all", "ship", "commit"]),
    default="all",
    show_default=True,
    help="ship: this host's buffer to the bucket (a sidecar, a VM); commit: the bucket to the dataset "
    "(one committer); all: both.",
)


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Keep a global option's value where every command of this run finds it
    (``ctx.meta`` is shared along the chain): the last one given wins, so an
    option works before or after the subcommand."""
    if value is not None:
        ctx.meta[f"bqspool.{param.name}"] = value
    return value


def global_options() -> list[click.Option]:
    """``--config``, ``--buffer`` and ``--schemas``: on the group and on every
    command (see :func:`add_global_options`); :func:`settings` reads them."""
    return [
        click.Option(
            ["--config", "config_path"],
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_remember,
            help="Configuration file [env var: BQSPOOL_CONFIG; default: ./bqspool.toml if present].",
        ),
        click.Option(
            ["--buffer", "buffer_path"],
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_remember,
            help=f"Buffer file [env var: BQSPOOL_BUFFER; default: `buffer` of the configuration, {DEFAULT_BUFFER}].",
        ),
        click.Option(
            ["--schemas", "schemas"],
            expose_value=False,
            callback=_remember,
            help=f"Schema set: a directory of table files or a bundled name ({', '.join(bundled_names())}) "
            "[env var: BQSPOOL_SCHEMAS; default: `schemas` of the configuration].",
        ),
    ]


def add_global_options(group: click.Group) -> None:
    """Give every command under ``group`` the global options it lacks."""
    for command in group.commands.values():
        have = {p.name for p in command.params}
        command.params.extend(o for o in global_options() if o.name not in have)
        if isinstance(command, click.Group):
            add_global_options(command)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]}, params=global_options())
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


def settings():
    """This run's configuration, resolved one way for every command: defaults,
    then ``bqspool.toml`` (or ``--config`` / ``BQSPOOL_CONFIG``), then
    ``BQSPOOL_*``, then ``--buffer`` / ``--schemas``."""
    from bqspool.loader.config import load_config as load
    from bqspool.loader.logs import redact

    ctx = click.get_current_context()
    cfg = ctx.meta.get("bqspool.settings")
    if cfg is None:
        flags = {
            name: ctx.meta[f"bqspool.{key}"]
            for name, key in (("buffer", "buffer_path"), ("schemas", "schemas"))
            if f"bqspool.{key}" in ctx.meta
        }
        cfg = load(ctx.meta.get("bqspool.config_path"), overrides=flags)
        redact(*cfg.secrets())  # what the configuration holds secret never reaches a log line
        ctx.meta["bqspool.settings"] = cfg
    return cfg


def configured_buffer() -> Path:
    """The configured buffer file (see :func:`settings`)."""
    return Path(settings().buffer)


def open_buffer(path: Path, schemas: str | None, **kw: Any):
    from bqspool.buffer import Buffer

    return Buffer(path, schemas, **kw)


def existing_buffer(path: Path) -> Path:
    if not path.exists():
        fail(f"no buffer at {path} (set --buffer, BQSPOOL_BUFFER or `buffer` in bqspool.toml)")
    return path
