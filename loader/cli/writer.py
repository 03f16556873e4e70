"""Writer commands: ``append``, ``status`` and ``dead-letters``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from bqspool.buffer.rows import stream_text
from bqspool.schemas.errors import BqspoolError

from ..text import counted
from .base import configured_buffer, existing_buffer, fail, main, open_buffer, settings
from .output import emit_rows, iso, rows_format


@main.command()
@click.argument("stream")
@click.option("--dead-letter", is_flag=True, help="Also store bad lines, as dead-letter rows with their reason.")
def append(stream: str, dead_letter: bool) -> None:
    """Append NDJSON events from stdin to STREAM.

    Good lines are stored; each bad line is reported on stderr with its line
    number and reason (and, with --dead-letter, kept as a dead letter).
    Exits 1 if any line was bad, 0 otherwise.
    """
    buffer_path, schemas = configured_buffer(), settings().schemas
    if not schemas:
        fail("append needs a schema set: --schemas, BQSPOOL_SCHEMAS or `schemas` in bqspool.toml")
    good = bad = 0
    chunk: list[Any] = []
    lines: list[int] = []
    with open_buffer(buffer_path, schemas) as buf:

        def flush_chunk() -> None:
            nonlocal good, bad
            if not chunk:
                return
            # Each event is validated once, here; the bad ones come back with their reasons.
            ids, invalid = buf.append_checked(stream, chunk, dead_letter=dead_letter)
            for pos, exc in invalid:
                click.echo(f"line {lines[pos]}: {exc}", err=True)
            bad += len(invalid)
            good += len(chunk) - len(invalid)
            chunk.clear()
            lines.clear()

        for lineno, line in enumerate(sys.stdin.buffer, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                bad += 1
                why = f"line {lineno}: invalid JSON: {exc}"
                click.echo(why, err=True)
                if dead_letter:
                    buf.dead_letter(stream, line.decode("utf-8", "backslashreplace"), why)
                continue
            chunk.append(event)
            lines.append(lineno)
            if len(chunk) >= 1000:
                flush_chunk()
        flush_chunk()
    click.echo(f"{counted(good, 'event')} appended to {stream_text(stream)}, {counted(bad, 'bad line')}", err=True)
    sys.exit(1 if bad else 0)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Pending events per stream, dead letters, drops and file size; and, where a
    bucket is configured, the commit stage per table: objects waiting, the
    oldest one's age, load jobs in the last 24 h against the budget, and
    objects held back."""
    buffer_path, schemas = configured_buffer(), settings().schemas
    if not buffer_path.exists():  # a committer's host: the bucket's view alone
        commit = _commit_summary()
        if commit is None:
            existing_buffer(buffer_path)  # says there is no buffer, and exits
        if as_json:
            click.echo(json.dumps({"commit": commit}, indent=2, sort_keys=True))
        else:
            _print_commit_summary(commit)
        return
    buf = open_buffer(buffer_path, schemas)
    try:
        stats = buf.stats()
    finally:
        buf.close()
    stats["loader"] = _loader_summary(buffer_path)
    stats["commit"] = _commit_summary()
    if as_json:
        click.echo(json.dumps(stats, indent=2, sort_keys=True))
        return
    click.echo(
        f"buffer  {stats['path']}  ({stats['file_bytes'] / 1e6:.1f} MB on disk, format {stats['format_version']})"
    )
    click.echo(f"{'stream':40s} {'pending':>10s} {'bytes':>12s} {'oldest':>10s}")
    tables = set(buf.schemas) if buf.schemas is not None else None
    for name, s in sorted(stats["streams"].items()):
        age = "-" if s["oldest_age_s"] is None else f"{s['oldest_age_s']:.0f}s"
        orphan = (
            "  (no table in schema set: the loader cannot drain it)"
            if tables is not None and name not in tables and s["pending"]
            else ""
        )
        click.echo(f"{name:40s} {s['pending']:>10d} {s['bytes']:>12d} {age:>10s}{orphan}")
    click.echo(f"{'total':40s} {stats['pending']:>10d} {stats['pending_bytes']:>12d}")
    click.echo(f"dead letters: {stats['dead_letters']}   dropped: {stats['dropped']}   lost: {stats['lost']}")
    if stats["lost"]:
        click.echo("warning: events appended with wait=False were lost to failed commits (disk full, I/O)")
    if stats["dead_letters"]:
        click.echo("  see `bqspool dead-letters list`; `bqspool dead-letters replay` once they are fixed")
    _print_loader_summary(buffer_path)
    _print_commit_summary(stats["commit"])
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
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1_000_000)


@dead_letters.command("list")
@click.option("--stream", help="Only this stream's dead letters.")
@click.option(
    "--limit", type=click.IntRange(min=0), default=20, show_default=True, help="How many, newest first; 0 for all."
)
@rows_format
def dead_letters_list(stream: str | None, limit: int, fmt: str) -> None:
    """Show dead letters, newest first: id, time, stream, event id, reason, payload.

    --json, --nl and --csv give each whole, its time in ISO 8601 and its
    payload as the JSON it holds (as text when it is not JSON)."""
    buffer_path = configured_buffer()
    import datetime as dt

    existing_buffer(buffer_path)
    buf = open_buffer(buffer_path, None)
    try:
        found = buf.dead_letters(limit or None, stream=stream)
    finally:
        buf.close()
    if fmt != "table":
        emit_rows([_dead_letter_doc(d) for d in found], fmt)
        return
    for d in found:
        when = dt.datetime.fromtimestamp(d["created_us"] / 1e6, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        payload = d["payload"] if len(d["payload"]) <= 60 else d["payload"][:57] + "..."
        click.echo(f"{d['id']}  {when}  {d['stream']}  {d['event_id']}  {d['reason']}\n    {payload}")
    if not found:
        click.echo("no dead letters")


def _dead_letter_doc(d: dict) -> dict:
    """A dead letter for machines: its time ISO 8601, its payload the JSON it holds."""
    try:
        payload = json.loads(d["payload"])
    except ValueError:
        payload = d["payload"]  # a line that was not JSON: kept as the text it was
    out = {k: v for k, v in d.items() if k not in ("created_us", "payload")}
    return {**out, "created": iso(d["created_us"]), "payload": payload}


@dead_letters.command("replay")
@click.option("--stream", help="Only this stream's dead letters.")
@click.argument("ids", nargs=-1, type=int)
def dead_letters_replay(stream: str | None, ids: tuple[int, ...]) -> None:
    """Check dead letters (all, a stream's, or those IDS) again against the schema set and make
    the ones that pass pending events again, with their original event ids. Exits 1 if any
    still fail; those stay, and are listed with their current reason."""
    buffer_path, schemas = configured_buffer(), settings().schemas
    if not schemas:
        fail("replay needs a schema set: --schemas, BQSPOOL_SCHEMAS or `schemas` in bqspool.toml")
    existing_buffer(buffer_path)
    buf = open_buffer(buffer_path, schemas)
    try:
        report = buf.replay_dead_letters(stream=stream, ids=list(ids) or None)
    finally:
        buf.close()
    for dead_id, reason in report.still_bad[:20]:
        click.echo(f"{dead_id}: {reason}", err=True)
    if len(report.still_bad) > 20:
        click.echo(f"... and {len(report.still_bad) - 20} more", err=True)
    click.echo(
        f"{counted(report.replayed, 'dead letter')} replayed as pending events, {len(report.still_bad):,} still invalid"
    )
    sys.exit(1 if report.still_bad else 0)


@dead_letters.command("purge")
@click.option("--stream", help="Only this stream's dead letters.")
@click.option(
    "--before",
    "before",
    help="Only those older than this: ISO-8601 time (UTC unless given) or an age like 7d, 12h, 30m.",
)
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.argument("ids", nargs=-1, type=int)
def dead_letters_purge(
    stream: str | None, before: str | None, everything: bool, yes: bool, ids: tuple[int, ...]
) -> None:
    """Delete dead letters for good: those IDS, a --stream's, those --before a time, or --all."""
    buffer_path = configured_buffer()
    if not (everything or stream or before or ids):
        fail("say which: IDS, --stream, --before or --all")
    before_us = _when(before) if before else None
    existing_buffer(buffer_path)
    buf = open_buffer(buffer_path, None)
    try:
        if not yes:
            total = buf.stats()["dead_letters"]
            chosen = sum(
                1
                for d in buf.dead_letters(None, stream=stream)
                if (everything or not ids or d["id"] in ids) and (before_us is None or d["created_us"] < before_us)
            )
            click.confirm(f"delete {counted(chosen, 'dead letter')} (of {total:,}) for good?", abort=True)
        n = buf.purge_dead_letters(stream=stream, ids=list(ids) or None, before_us=before_us, everything=everything)
    finally:
        buf.close()
    click.echo(f"{counted(n, 'dead letter')} deleted")


def _loader_summary(buffer_path: Path) -> dict:
    """The loader's view of the buffer, from the ledger (it owns those tables)."""
    from bqspool.buffer import store

    from ..operate.status import ship_status
    from ..ship import ledger

    conn = store.connect(buffer_path)
    try:
        ledger.prepare(conn)
        return ship_status(conn)
    finally:
        conn.close()


def _commit_summary() -> dict | None:
    """The commit stage's view from the bucket, where a bucket is configured; None if none is."""
    from dataclasses import replace

    try:
        cfg = settings()  # the one resolution: --config, the file, BQSPOOL_*, flags
    except BqspoolError:
        return None
    if not cfg.bucket:
        return None
    from ..clients import make_object_store
    from ..layout import Layout
    from ..operate.status import commit_status

    try:
        # A status check answers in seconds or says why not: a short retry deadline.
        store = make_object_store(replace(cfg, retry_deadline=min(cfg.retry_deadline, 10.0)))
        tables = None
        if cfg.schemas:
            from bqspool.schemas import load_schema_set

            tables = [t.name for t in load_schema_set(cfg.schemas).tables()]
        layout = Layout(cfg.prefix)
        out = commit_status(store, layout, cfg.quota_jobs_per_table_day, tables)
        from ..operate.archive import archive_size

        out["archive"] = archive_size(store, layout)
        return out
    except BqspoolError as exc:
        return {"error": str(exc)}


def _print_commit_summary(commit: dict | None) -> None:
    if commit is None:
        return
    if "error" in commit:
        click.echo(f"commit stage: cannot read the bucket: {commit['error']}")
        return
    if commit["tables"]:
        click.echo("commit stage (the bucket):")
        click.echo(f"{'table':32s} {'waiting':>8s} {'oldest':>8s} {'jobs 24h':>14s} {'quarantined':>12s} {'dead':>6s}")
    for table, t in commit["tables"].items():
        age = "-" if t["oldest_age_s"] is None else f"{t['oldest_age_s']:.0f}s"
        jobs = f"{t['jobs_24h']}/{t['budget']}"
        note = (
            "  (deferring loads)"
            if t["jobs_24h"] >= t["budget"]
            else "  (near budget: grouping)"
            if t["jobs_24h"] >= 0.8 * t["budget"]
            else ""
        )
        click.echo(
            f"{table:32s} {t['waiting']:>8d} {age:>8s} {jobs:>14s} {t['quarantined']:>12d} {t['dead_letters']:>6d}{note}"
        )
    if commit["committing"]:
        click.echo(f"committing now: {commit['committing']}")
    from ..operate.archive import by_class

    classes = by_class(commit.get("archive") or {})
    if classes:
        parts = ", ".join(
            f"{size['objects']} objects, {size['bytes'] / 1e6:.1f} MB {cls}" for cls, size in sorted(classes.items())
        )
        click.echo(f"archive (loaded objects, for restore): {parts}")


def _print_loader_summary(buffer_path: Path) -> None:
    loader = _loader_summary(buffer_path)
    if loader["batches"]:
        states = ", ".join(f"{n} {s}" for s, n in sorted(loader["batches"].items())) or "none"
        click.echo(f"batches: {states}")
    if loader["quarantined"]:
        click.echo(f"warning: {counted(loader['quarantined'], 'batch')} quarantined: see `bqspool quarantine list`")
    if loader["shipping"]:
        click.echo(f"shipping now: {loader['shipping']}")
