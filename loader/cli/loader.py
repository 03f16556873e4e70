"""Loader commands: ``setup``, ``drain``, ``run`` and the ``local`` stack."""

from __future__ import annotations

import json
import sys

import click
from bqspool.schemas import load_schema_set

from .base import EXIT_ERROR, EXIT_QUARANTINE, EXIT_UNDRAINABLE, config_option, load_config, main


@main.command()
@config_option
def setup(config_path: str | None) -> None:
    """Create the dataset and every table of the schema set (idempotent).

    New NULLABLE fields are added to existing tables; changes that cannot be
    made are listed, and the command fails.
    """
    from bqspool.schemas.errors import SetupError

    from ..clients import make_warehouse

    cfg = load_config(config_path)
    cfg.require("schemas", "project", "dataset")
    sset = load_schema_set(cfg.schemas)
    wh = make_warehouse(cfg)
    if wh.ensure_dataset():
        click.echo(f"created dataset {cfg.project}.{cfg.dataset} in {cfg.location}")
    problems = []
    for table in sset.tables():
        try:
            for change in wh.ensure_table(table):
                click.echo(change)
        except SetupError as exc:
            problems.append(str(exc))
    if problems:
        for p in problems:
            click.echo(f"error: {p}", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(f"{len(sset)} tables of {sset.name} ready in {cfg.project}.{cfg.dataset}")


def _loader_process() -> None:
    """Process-wide settings for a loader process (not for apps embedding us).

    Arrow's default allocator keeps freed memory for reuse; staging frees a
    lot between chunks, so the system allocator keeps a long drain's peak
    RSS much lower at no measurable cost in speed.
    """
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def _print_report(report) -> None:
    click.echo(
        f"loaded {report.events_loaded} events in {report.batches_loaded} batches with "
        f"{report.jobs_submitted} load jobs in {report.seconds:.1f}s",
        err=True,
    )
    if report.dead_lettered:
        click.echo(
            f"{report.dead_lettered} events a load job rejected are dead letters now: see `bqspool dead-letters list`",
            err=True,
        )
    for stream, why in report.deferred.items():
        click.echo(f"deferred {stream}: {why}", err=True)


@main.command()
@config_option
@click.option("--once", is_flag=True, required=True, help="Drain everything pending now, then exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the drain report as JSON.")
def drain(config_path: str | None, once: bool, as_json: bool) -> None:
    """Drain the buffer into BigQuery once (for cron, systemd timers, CronJobs).

    Exits 0 when everything pending was loaded, 2 when a batch is in
    quarantine, 3 when something that passes stopped it (GCS or BigQuery
    unreachable past the retry policy, a full disk, a locked file), 4 when
    another loader holds the buffer or took it over, 5 when a stream has
    pending events but no table in the schema set.
    """
    from .. import holdback
    from ..clients import make_drainer

    cfg = load_config(config_path)
    _loader_process()
    report = make_drainer(cfg).drain_once()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_report(report)
    held = holdback.list_held(cfg.buffer)
    if held:
        for b in held:
            click.echo(f"quarantined: {b.batch_id} ({b.rows} events): {b.error}", err=True)
        click.echo("fix the cause, then `bqspool quarantine retry` (or `drop`)", err=True)
        sys.exit(EXIT_QUARANTINE)
    if report.undrainable:
        for stream, n in report.undrainable.items():
            click.echo(
                f"not drained: stream {stream!r} has {n} pending events but no table in schema set {cfg.schemas}",
                err=True,
            )
        sys.exit(EXIT_UNDRAINABLE)


@main.command()
@config_option
def run(config_path: str | None) -> None:
    """Run the drain on the configured schedule until SIGTERM/SIGINT."""
    from ..scheduler import run_forever

    cfg = load_config(config_path)
    _loader_process()
    run_forever(cfg)


@main.group()
def local() -> None:
    """The local stack: fake-gcs-server and the BigQuery emulator."""


local_dir = click.option(
    "--dir",
    "folder",
    default=".bqspool/local",
    show_default=True,
    envvar="BQSPOOL_LOCAL_DIR",
    help="Where the stack keeps its state, data and logs.",
)


@local.command("up")
@local_dir
@click.option(
    "--ephemeral",
    is_flag=True,
    help="Keep BigQuery's tables in memory: load jobs run several times faster, and the tables are "
    "gone when the emulator stops (`local down`, an outage).",
)
def local_up(folder: str, ephemeral: bool) -> None:
    """Start both servers in the background and print `export` lines."""
    from .. import localstack

    state = localstack.up(folder, persistent=not ephemeral)
    click.echo(localstack.export_lines(state))
    click.echo(
        f"# local stack up: GCS on {state.gcs_port}, BigQuery on {state.bq_port}; "
        f"`eval $(bqspool local env)` in other shells",
        err=True,
    )


@local.command("env")
@local_dir
def local_env(folder: str) -> None:
    """Print the `export` lines again."""
    from .. import localstack

    click.echo(localstack.export_lines(localstack.load_state(folder)))


@local.command("down")
@local_dir
def local_down(folder: str) -> None:
    """Stop both servers (their data is kept, unless BigQuery ran with --ephemeral)."""
    from .. import localstack

    localstack.down(folder)
    click.echo("local stack stopped", err=True)
