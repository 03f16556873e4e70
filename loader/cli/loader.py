"""Loader commands: ``setup``, ``ship``, ``commit``, ``drain``, ``run`` and the ``local`` stack."""

from __future__ import annotations

import json
import shlex
import sys

import click
from bqspool.schemas import load_schema_set

from ..text import counted
from .base import EXIT_ERROR, EXIT_QUARANTINE, EXIT_UNDRAINABLE, main, role_option, settings


@main.command()
@click.option(
    "--views", is_flag=True, help="Also create a view of each of the schema set's queries without parameters."
)
def setup(views: bool) -> None:
    """Create the dataset and every table of the schema set (idempotent).

    New NULLABLE fields are added to existing tables; changes that cannot be
    made are listed, and the command fails. Where a bucket is configured, it
    sets the archive's lifecycle ([archive] in the configuration).
    """
    from bqspool.schemas.errors import SetupError

    from ..clients import make_warehouse

    cfg = settings()
    cfg.require("schemas", "project", "dataset")
    sset = load_schema_set(cfg.schemas)
    if cfg.bucket:  # before any table: a missing bucket is said first, not after "ready"
        from ..clients import make_object_store
        from ..layout import Layout

        make_object_store(cfg).list_objects(Layout(cfg.prefix).lease)
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
    click.echo(f"{counted(len(sset), 'table')} of {sset.name} ready in {cfg.project}.{cfg.dataset}")
    if views:
        _views(wh, sset, cfg)
    if cfg.bucket:
        _lifecycle(cfg)


def _views(wh, sset, cfg) -> None:
    from ..operate.queries import qualified, view_name

    made = 0
    for q in sset.queries.values():
        if q.params:
            continue
        name = view_name(q)
        if name in sset:
            click.echo(f"error: query {q.name} would make view {name}, a table of the set; not replacing it", err=True)
            sys.exit(EXIT_ERROR)
        changed = wh.create_view(name, qualified(q.sql, list(sset), cfg.project, cfg.dataset))
        made += 1
        click.echo(f"{'created' if changed else 'unchanged'} view {name} ({q.name})")
    skipped = sum(1 for q in sset.queries.values() if q.params)
    click.echo(f"{made} views; {skipped} queries take parameters and stay queries (`bqspool query NAME`)")


def _lifecycle(cfg) -> None:
    from ..clients import make_object_store
    from ..layout import Layout
    from ..operate.archive import apply_lifecycle

    rules, kept = apply_lifecycle(make_object_store(cfg), cfg, Layout(cfg.prefix))
    for rule in rules:
        click.echo(f"archive lifecycle: {rule}")
    if not kept:
        click.echo(
            f"warning: bucket {cfg.bucket} did not keep the lifecycle rules (fake-gcs-server ignores them); "
            "the archive stays in its storage class until deleted by hand",
            err=True,
        )


def _loader_process() -> None:
    """Process-wide settings for a loader process (not for apps embedding us).

    Arrow's default allocator keeps freed memory for reuse; staging frees a
    lot between chunks, so the system allocator keeps a long drain's peak
    RSS much lower at no measurable cost in speed.
    """
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def _print_ship(report) -> None:
    from ..billing import describe

    if report.due:
        click.echo("due: " + "; ".join(f"{s}: {why}" for s, why in report.due.items()), err=True)
    click.echo(
        f"shipped {counted(report.events_shipped, 'event')} in {counted(report.batches_shipped, 'batch')} "
        f"({report.bytes_shipped} bytes) in {report.seconds:.1f}s{_steps(report.step_seconds)}; "
        f"{describe(report.requests)}",
        err=True,
    )


def _steps(took: dict[str, float]) -> str:
    """``(stage 0.80s, upload 0.09s, ...)``: where a ship's or a commit's time went; empty when it did nothing."""
    shown = [f"{step} {seconds:.2f}s" for step, seconds in took.items() if seconds >= 0.005]
    return f" ({', '.join(shown)})" if shown else ""


def _print_commit(report) -> None:
    from ..billing import describe

    waiting = sum(report.waiting.values())
    if report.idle:
        click.echo(f"nothing staged: no commit; {describe(report.requests)}", err=True)
        return
    click.echo(
        f"committed {counted(report.objects_loaded, 'object')} ({counted(report.events_loaded, 'event')}) with "
        f"{counted(report.jobs_submitted, 'load job')} in {report.seconds:.1f}s{_steps(report.step_seconds)}; "
        f"{counted(waiting, 'object')} still waiting; "
        f"{describe({**report.requests, **report.bigquery})}",
        err=True,
    )
    if report.dead_lettered:
        click.echo(
            f"{report.dead_lettered} events a load job rejected are dead letters in the bucket: "
            "see `bqspool quarantine list`",
            err=True,
        )
    for table, why in report.deferred.items():
        click.echo(f"deferred {table}: {why}", err=True)


def _ship_exit(cfg, report) -> None:
    """Exit 6 for batches the ship held back, 5 for streams without a table."""
    from ..ship import quarantine

    held = quarantine.list_batches(cfg.buffer)
    if held:
        for b in held:
            click.echo(f"quarantined: {b.batch_id} ({b.rows} events): {b.error}", err=True)
        click.echo("fix the cause, then `bqspool quarantine retry` (or `drop`)", err=True)
        sys.exit(EXIT_QUARANTINE)
    if report.undrainable:
        for stream, n in report.undrainable.items():
            click.echo(
                f"not shipped: stream {stream!r} has {n} pending events but no table in schema set {cfg.schemas}",
                err=True,
            )
        sys.exit(EXIT_UNDRAINABLE)


def _commit_exit(report) -> None:
    """Exit 6 when this commit quarantined an object."""
    if report.quarantined:
        for name in report.quarantined:
            click.echo(f"quarantined: {name}", err=True)
        click.echo("see `bqspool quarantine list`; fix the cause, then `bqspool quarantine retry`", err=True)
        sys.exit(EXIT_QUARANTINE)


once_option = click.option(
    "--once", is_flag=True, help="Do everything pending now, then exit: the only mode (`run` repeats it); optional."
)
due_option = click.option(
    "--due",
    is_flag=True,
    help="Ship only the streams that are due (a full object, or an event ship.max_delay old), "
    "as `run` does: for cron hosts. Default: ship everything pending.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")


@main.command()
@once_option
@due_option
@json_option
def ship(once: bool, due: bool, as_json: bool) -> None:
    """Ship the buffer to the bucket once: seal, stage, upload, hand over.

    Runs on every host; needs only the bucket, never BigQuery. A batch's
    rows leave the buffer once its object is in the bucket, verified.
    Exits 0 when everything pending was shipped, 6 when a batch cannot be
    staged (quarantined), 3 when something that passes stopped it (GCS
    unreachable, a full disk, a locked file), 4 when another loader ships
    this buffer, 5 when a stream has pending events but no table.
    """
    from ..clients import make_drainer

    cfg = settings()
    _loader_process()
    report = make_drainer(cfg, commit=False).ship_once(due_only=due)
    click.echo(json.dumps(report.as_dict(), indent=2)) if as_json else _print_ship(report)
    _ship_exit(cfg, report)


@main.command()
@once_option
@json_option
def commit(once: bool, as_json: bool) -> None:
    """Load what every host shipped into BigQuery once, exactly once.

    Runs once per dataset (one committer at a time holds the bucket's
    lease); needs no buffer. Exits 0 when everything waiting was loaded or
    deferred by the budget, 6 when an object was quarantined, 3 when GCS or
    BigQuery stayed unreachable, 4 when another committer holds the lease
    or took it over.
    """
    from ..clients import make_committer

    cfg = settings()
    _loader_process()
    committer = make_committer(cfg)
    committer.jobs.progress_enabled = True  # a bar on a terminal, a log line every 5 s elsewhere
    report = committer.commit_once()
    click.echo(json.dumps(report.as_dict(), indent=2)) if as_json else _print_commit(report)
    _commit_exit(report)


@main.command()
@once_option
@due_option
@json_option
def drain(once: bool, due: bool, as_json: bool) -> None:
    """Ship, then commit, in one process: what a single host runs (cron, timers, CronJobs).

    The same two stages as `ship` and `commit`, with the same guarantee.
    Exits 0 when everything pending was loaded, 6 when a batch or an object
    is in quarantine, 3 when something that passes stopped it (GCS or
    BigQuery unreachable past the retry policy, a full disk, a locked
    file), 4 when another loader or committer holds its lease or took it
    over, 5 when a stream has pending events but no table in the schema set.
    """
    from ..clients import make_drainer

    cfg = settings()
    _loader_process()
    report = make_drainer(cfg).drain_once(due_only=due)
    if cfg.metrics_textfile:
        _textfile(cfg, report)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_ship(report.ship)
        _print_commit(report.commit)
    _ship_exit(cfg, report.ship)
    _commit_exit(report.commit)


def _textfile(cfg, report) -> None:
    """This drain's metrics, for node_exporter's textfile collector (counters of this run)."""
    from ..scheduler import record
    from ..watch.metrics import LoaderMetrics

    metrics = LoaderMetrics()
    record(metrics, report)
    metrics.write_textfile(cfg.metrics_textfile)


@main.command()
@role_option
def run(role: str) -> None:
    """Run ship, commit or both until SIGTERM/SIGINT.

    ship: every ship.check (10 s) the streams that are due ship (a full
    object, or an event ship.max_delay old); the check sends no request.
    commit: a commit on the schedule (90 s). all: ship's checks, and a
    commit after each that shipped something. On SIGTERM a shipping role
    ships everything pending within the shutdown deadline (8 s, inside
    Cloud Run's 10), then exits.
    """
    import logging

    from ..scheduler import run_forever

    # A service logs what each cycle did: bqspool's own lines at info at least
    # (the banner, one line a cycle); other libraries stay quiet unless -vv.
    ours = logging.getLogger("bqspool")
    ours.setLevel(min(logging.getLogger().level, logging.INFO))
    cfg = settings()
    _loader_process()
    run_forever(cfg, role=role)


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
    from ..backends import localstack

    state = localstack.up(folder, persistent=not ephemeral)
    click.echo(localstack.export_lines(state))
    again = "bqspool local env" + ("" if folder == ".bqspool/local" else f" --dir {shlex.quote(str(folder))}")
    click.echo(
        f'# local stack up: GCS on {state.gcs_port}, BigQuery on {state.bq_port}; `eval "$({again})"` in other shells',
        err=True,
    )


@local.command("env")
@local_dir
def local_env(folder: str) -> None:
    """Print the `export` lines again."""
    from ..backends import localstack

    click.echo(localstack.export_lines(localstack.load_state(folder)))


@local.command("down")
@local_dir
def local_down(folder: str) -> None:
    """Stop both servers (their data is kept, unless BigQuery ran with --ephemeral)."""
    from ..backends import localstack

    localstack.down(folder)
    click.echo("local stack stopped", err=True)
