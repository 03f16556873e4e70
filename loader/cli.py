"""The ``bqspool`` command: a thin layer over the library.

Every command takes its buffer path and schema set from options or from
``BQSPOOL_BUFFER`` / ``BQSPOOL_SCHEMAS``.
"""

from __future__ import annotations

import contextlib
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
    tables = set(buf.schemas) if buf.schemas is not None else None
    for name, s in sorted(stats["streams"].items()):
        age = "-" if s["oldest_age_s"] is None else f"{s['oldest_age_s']:.0f}s"
        orphan = "  (no table in schema set: the loader cannot drain it)" if tables is not None and \
            name not in tables and s["pending"] else ""
        click.echo(f"{name:40s} {s['pending']:>10d} {s['bytes']:>12d} {age:>10s}{orphan}")
    click.echo(f"{'total':40s} {stats['pending']:>10d} {stats['pending_bytes']:>12d}")
    click.echo(f"dead letters: {stats['dead_letters']}   dropped: {stats['dropped']}   lost: {stats['lost']}")
    if stats["lost"]:
        click.echo("warning: events appended with wait=False were lost to failed commits (disk full, I/O)")
    if stats["dead_letters"]:
        click.echo("  see `bqspool dead-letters list`; `bqspool dead-letters replay` once they are fixed")
    loader = stats["loader"]
    if loader["batches"] or loader["jobs_24h"]:
        states = ", ".join(f"{n} {s}" for s, n in sorted(loader["batches"].items())) or "none"
        click.echo(f"batches: {states}")
        budget = _quota_budget()
        for stream, n in sorted(loader["jobs_24h"].items()):
            note = ""
            if budget:
                note = f" of {budget} budget" + ("  (deferring loads)" if n >= budget else
                                                  "  (near budget: grouping)" if n >= 0.8 * budget else "")
            click.echo(f"load jobs in 24h: {stream}: {n}{note}")
    if loader["quarantined"]:
        click.echo(f"warning: {loader['quarantined']} batches quarantined: see `bqspool quarantine list`")
    if loader["draining"]:
        click.echo(f"draining now: {loader['draining']}")
    if stats["recovered_from"]:
        click.echo(f"warning: a corrupt buffer was moved aside to {stats['recovered_from']}")


@main.group("dead-letters")
def dead_letters() -> None:
    """List, replay or purge events that could not be stored as valid."""


def _when(text: str) -> int:
    """A time as epoch microseconds: ISO-8601 (UTC unless it says otherwise), or an age like 7d, 12h, 30m."""
    import datetime as dt
    import re

    from bqspool.buffer.store import now_us

    age = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if age:
        seconds = int(age.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[age.group(2)]
        return now_us() - seconds * 1_000_000
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither an ISO-8601 time nor an age like 7d, 12h, 30m") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1_000_000)


@dead_letters.command("list")
@buffer_option
@click.option("--stream", help="Only this stream's dead letters.")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True, help="How many, newest first; 0 for all.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, payload whole.")
def dead_letters_list(buffer_path: Path, stream: str | None, limit: int, as_json: bool) -> None:
    """Show dead letters, newest first: id, time, stream, event id, reason, payload."""
    import datetime as dt

    if not buffer_path.exists():
        _fail(f"no buffer at {buffer_path} (set --buffer or BQSPOOL_BUFFER)")
    buf = _open_buffer(buffer_path, None)
    try:
        found = buf.dead_letters(limit or None, stream=stream)
    finally:
        buf.close()
    for d in found:
        if as_json:
            click.echo(json.dumps(d, ensure_ascii=False))
            continue
        when = dt.datetime.fromtimestamp(d["created_us"] / 1e6, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        payload = d["payload"] if len(d["payload"]) <= 60 else d["payload"][:57] + "..."
        click.echo(f"{d['id']}  {when}  {d['stream']}  {d['event_id']}  {d['reason']}\n    {payload}")
    if not found and not as_json:
        click.echo("no dead letters")


@dead_letters.command("replay")
@buffer_option
@schemas_option
@click.option("--stream", help="Only this stream's dead letters.")
@click.argument("ids", nargs=-1, type=int)
def dead_letters_replay(buffer_path: Path, schemas: str | None, stream: str | None, ids: tuple[int, ...]) -> None:
    """Check dead letters (all, a stream's, or those IDS) again against the schema set and make
    the ones that pass pending events again, with their original event ids. Exits 1 if any
    still fail; those stay, and are listed with their current reason."""
    if not schemas:
        _fail("replay needs a schema set: --schemas or BQSPOOL_SCHEMAS")
    if not buffer_path.exists():
        _fail(f"no buffer at {buffer_path} (set --buffer or BQSPOOL_BUFFER)")
    buf = _open_buffer(buffer_path, schemas)
    try:
        report = buf.replay_dead_letters(stream=stream, ids=list(ids) or None)
    except BqspoolError as exc:
        _fail(str(exc))
    finally:
        buf.close()
    for dead_id, reason in report.still_bad[:20]:
        click.echo(f"{dead_id}: {reason}", err=True)
    if len(report.still_bad) > 20:
        click.echo(f"... and {len(report.still_bad) - 20} more", err=True)
    click.echo(f"{report.replayed} dead letters replayed as pending events, {len(report.still_bad)} still invalid")
    sys.exit(1 if report.still_bad else 0)


@dead_letters.command("purge")
@buffer_option
@click.option("--stream", help="Only this stream's dead letters.")
@click.option("--before", "before", help="Only those older than this: ISO-8601 time (UTC unless given) or an age "
                                         "like 7d, 12h, 30m.")
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.argument("ids", nargs=-1, type=int)
def dead_letters_purge(buffer_path: Path, stream: str | None, before: str | None, everything: bool, yes: bool,
                       ids: tuple[int, ...]) -> None:
    """Delete dead letters for good: those IDS, a --stream's, those --before a time, or --all."""
    if not (everything or stream or before or ids):
        _fail("say which: IDS, --stream, --before or --all")
    before_us = _when(before) if before else None
    if not buffer_path.exists():
        _fail(f"no buffer at {buffer_path} (set --buffer or BQSPOOL_BUFFER)")
    buf = _open_buffer(buffer_path, None)
    try:
        if not yes:
            total = buf.stats()["dead_letters"]
            click.confirm(f"delete the selected dead letters (of {total}) for good?", abort=True)
        n = buf.purge_dead_letters(stream=stream, ids=list(ids) or None, before_us=before_us, everything=everything)
    except BqspoolError as exc:
        _fail(str(exc))
    finally:
        buf.close()
    click.echo(f"{n} dead letters deleted")


def _quota_budget() -> int | None:
    try:
        from .config import load_config

        return load_config().quota_jobs_per_table_day
    except BqspoolError:
        return None


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


# -- the loader ---------------------------------------------------------------

config_option = click.option("--config", "config_path", envvar="BQSPOOL_CONFIG", type=click.Path(dir_okay=False),
                             help="Configuration file (default: ./bqspool.toml if present).")


def _config(config_path: str | None):
    from .config import load_config

    try:
        return load_config(config_path)
    except BqspoolError as exc:
        _fail(str(exc))


@main.group()
def config() -> None:
    """Inspect the loader configuration."""


@config.command("show")
@config_option
@click.option("--json", "as_json", is_flag=True)
def config_show(config_path: str | None, as_json: bool) -> None:
    """Print the effective configuration and where each value came from."""
    cfg = _config(config_path)
    values = cfg.public()
    if as_json:
        click.echo(json.dumps({k: {"value": v, "source": cfg.sources[k]} for k, v in values.items()}, indent=2))
        return
    for key, value in values.items():
        click.echo(f"{key:26s} {value!s:40s} ({cfg.sources[key]})")


@main.command()
@config_option
def setup(config_path: str | None) -> None:
    """Create the dataset and every table of the schema set (idempotent).

    New NULLABLE fields are added to existing tables; changes that cannot be
    made are listed, and the command fails.
    """
    from bqspool.schemas.errors import SetupError

    from .clients import make_warehouse

    cfg = _config(config_path)
    try:
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
            sys.exit(1)
        click.echo(f"{len(sset)} tables of {sset.name} ready in {cfg.project}.{cfg.dataset}")
    except BqspoolError as exc:
        _fail(str(exc))


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
        f"{report.jobs_submitted} load jobs in {report.seconds:.1f}s", err=True)
    if report.dead_lettered:
        click.echo(f"{report.dead_lettered} events a load job rejected are dead letters now: "
                   "see `bqspool dead-letters list`", err=True)
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
    from bqspool.schemas.errors import LeaseHeldError, LeaseLostError, RetryableError

    from . import holdback
    from .clients import make_drainer

    cfg = _config(config_path)
    _loader_process()
    try:
        drainer = make_drainer(cfg)
        report = drainer.drain_once()
    except (LeaseHeldError, LeaseLostError) as exc:
        _fail(str(exc), 4)
    except RetryableError as exc:
        _fail(f"{exc}\nnothing was lost: the events stay in the buffer; run the drain again", 3)
    except BqspoolError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_report(report)
    conn = _ledger_conn(config_path, cfg)
    held = holdback.held(conn)
    conn.close()
    if held:
        for b in held:
            click.echo(f"quarantined: {b.batch_id} ({b.rows} events): {b.error}", err=True)
        click.echo("fix the cause, then `bqspool quarantine retry` (or `drop`)", err=True)
        sys.exit(2)
    if report.undrainable:
        for stream, n in report.undrainable.items():
            click.echo(f"not drained: stream {stream!r} has {n} pending events but no table in schema set "
                       f"{cfg.schemas}", err=True)
        sys.exit(5)


@main.command()
@config_option
def run(config_path: str | None) -> None:
    """Run the drain on the configured schedule until SIGTERM/SIGINT."""
    from .scheduler import run_forever

    cfg = _config(config_path)
    _loader_process()
    try:
        run_forever(cfg)
    except BqspoolError as exc:
        _fail(str(exc))


@main.group()
def quarantine() -> None:
    """List, retry or drop batches a load job rejected."""


def _ledger_conn(config_path: str | None, cfg=None):
    """A connection to the configured buffer file, migrated to the current format."""
    from bqspool.buffer import store

    cfg = cfg or _config(config_path)
    path = Path(cfg.buffer)
    if not path.exists():
        _fail(f"no buffer at {path}")
    _, in_use = store.open_file(path, check="none")
    store.release(in_use)
    return store.connect(path)


@contextlib.contextmanager
def _operator_lease(config_path: str | None):
    """The configured buffer under the drain lease, for an operator's step: it never races a drain."""
    from bqspool.schemas.errors import LeaseHeldError

    from . import ledger

    cfg = _config(config_path)
    conn = _ledger_conn(config_path, cfg)
    try:
        try:
            fence = ledger.acquire_lease(conn, f"operator:{ledger.new_holder()}", 60, Path(cfg.buffer))
        except LeaseHeldError as exc:
            _fail(f"{exc}; try again when it is done", 4)
        try:
            yield conn, fence
        finally:
            ledger.release_lease(conn, fence)
    finally:
        conn.close()


@quarantine.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True)
def quarantine_list(config_path: str | None, as_json: bool) -> None:
    """List quarantined batches with their reasons."""
    from . import holdback

    conn = _ledger_conn(config_path)
    try:
        held = holdback.held(conn)
    finally:
        conn.close()
    if as_json:
        click.echo(json.dumps([b.__dict__ for b in held], indent=2))
        return
    if not held:
        click.echo("no quarantined batches")
    for b in held:
        click.echo(f"{b.batch_id}  {b.stream}  {b.rows} events  {b.error}")


@quarantine.command("retry")
@config_option
@click.argument("batch_ids", nargs=-1)
def quarantine_retry(config_path: str | None, batch_ids: tuple[str, ...]) -> None:
    """Put quarantined batches (all, or those named) back in line for the next drain."""
    from . import holdback

    with _operator_lease(config_path) as (conn, fence):
        n = holdback.retry(conn, list(batch_ids) or None, fence)
    click.echo(f"{n} batches will be loaded by the next drain")


@quarantine.command("drop")
@config_option
@click.argument("batch_ids", nargs=-1, required=True)
def quarantine_drop(config_path: str | None, batch_ids: tuple[str, ...]) -> None:
    """Give up on quarantined batches: their events move to dead letters."""
    from . import holdback

    with _operator_lease(config_path) as (conn, fence):
        n, events = holdback.drop(conn, list(batch_ids), fence)
    click.echo(f"{n} batches dropped; their {events} events are in the dead letters")


@main.group()
def local() -> None:
    """The local stack: fake-gcs-server and the BigQuery emulator."""


local_dir = click.option("--dir", "folder", default=".bqspool/local", show_default=True,
                         envvar="BQSPOOL_LOCAL_DIR", help="Where the stack keeps its state, data and logs.")


@local.command("up")
@local_dir
@click.option("--ephemeral", is_flag=True,
              help="Keep BigQuery's tables in memory: load jobs run several times faster, and the tables are "
                   "gone when the emulator stops (`local down`, an outage).")
def local_up(folder: str, ephemeral: bool) -> None:
    """Start both servers in the background and print `export` lines."""
    from . import localstack

    try:
        state = localstack.up(folder, persistent=not ephemeral)
    except BqspoolError as exc:
        _fail(str(exc))
    click.echo(localstack.export_lines(state))
    click.echo(f"# local stack up: GCS on {state.gcs_port}, BigQuery on {state.bq_port}; "
               f"`eval $(bqspool local env)` in other shells", err=True)


@local.command("env")
@local_dir
def local_env(folder: str) -> None:
    """Print the `export` lines again."""
    from . import localstack

    try:
        click.echo(localstack.export_lines(localstack.load_state(folder)))
    except BqspoolError as exc:
        _fail(str(exc))


@local.command("down")
@local_dir
def local_down(folder: str) -> None:
    """Stop both servers (their data is kept, unless BigQuery ran with --ephemeral)."""
    from . import localstack

    try:
        localstack.down(folder)
    except BqspoolError as exc:
        _fail(str(exc))
    click.echo("local stack stopped", err=True)
