"""``bqspool quarantine list|retry|drop``: what is held back from loading.

Two places hold things back. The buffer holds batches the ship stage
cannot stage (a row that no longer fits its table); retry and drop take
the buffer's lease, so they never race a running ship (exit 4 while one
runs). The bucket holds objects the commit stage held back: a shipped
object both of whose halves a load job rejected (``quarantine``), and
single events a load job rejected alone (``dead``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..text import counted
from .base import main, settings


def _bucket(cfg):
    """(store, layout) where a bucket is configured, else None."""
    if not cfg.bucket:
        return None
    from ..clients import make_object_store
    from ..layout import Layout

    return make_object_store(cfg), Layout(cfg.prefix)


def _held(cfg) -> list[dict]:
    from ..commit import held
    from ..ship import quarantine

    out = []
    if Path(cfg.buffer).exists():
        for b in quarantine.list_batches(cfg.buffer):
            out.append({"where": "buffer", "id": b.batch_id, "table": b.stream, "events": b.rows, "reason": b.error})
    bucket = _bucket(cfg)
    if bucket:
        for h in held.held_objects(bucket[0], bucket[1]):
            out.append(
                {"where": "bucket", "id": h.name, "table": h.table, "area": h.area, "bytes": h.size, "reason": h.reason}
            )
    return out


@main.group()
def quarantine() -> None:
    """List, retry or drop what is held back from loading (in the buffer and in the bucket)."""


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: a list of held items.")
def quarantine_list(as_json: bool) -> None:
    """List held-back batches (buffer) and objects (bucket) with their reasons."""
    items = _held(settings())
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo("nothing is held back")
    for h in items:
        what = f"{h['events']} events" if h["where"] == "buffer" else f"{h['area']}, {h['bytes']} bytes"
        click.echo(f"{h['where']:6s}  {h['id']}  {h['table']}  {what}  {h['reason']}")


@quarantine.command("retry")
@click.argument("ids", nargs=-1)
def quarantine_retry(ids: tuple[str, ...]) -> None:
    """Put held items (all, or those named) back in line: batches for the next ship,
    objects for the next commit (each loaded alone)."""
    from ..commit import held
    from ..ship import quarantine

    cfg = settings()
    items = _held(cfg)
    named = set(ids)
    in_buffer = [h["id"] for h in items if h["where"] == "buffer" and (not named or h["id"] in named)]
    in_bucket = [h["id"] for h in items if h["where"] == "bucket" and (not named or h["id"] in named)]
    unknown = named - set(in_buffer) - set(in_bucket)
    if unknown:
        raise click.BadParameter(f"not held back: {', '.join(sorted(unknown))}", param_hint="IDS")
    n = quarantine.retry_batches(cfg.buffer, in_buffer) if in_buffer else 0
    bucket = _bucket(cfg)
    m = held.retry(bucket[0], bucket[1], in_bucket) if bucket and in_bucket else 0
    click.echo(
        f"{counted(n, 'batch')} will be shipped by the next ship, {counted(m, 'object')} loaded by the next commit"
    )


@quarantine.command("drop")
@click.argument("ids", nargs=-1, required=True)
def quarantine_drop(ids: tuple[str, ...]) -> None:
    """Give up on held items: a batch's events move to the buffer's dead letters; an
    object moves to the bucket's dropped/ area, never to be loaded."""
    from ..commit import held
    from ..ship import quarantine

    cfg = settings()
    items = {h["id"]: h for h in _held(cfg)}
    unknown = [i for i in ids if i not in items]
    if unknown:
        raise click.BadParameter(f"not held back: {', '.join(unknown)}", param_hint="IDS")
    in_buffer = [i for i in ids if items[i]["where"] == "buffer"]
    in_bucket = [i for i in ids if items[i]["where"] == "bucket"]
    if in_buffer:
        n, events = quarantine.drop_batches(cfg.buffer, in_buffer)
        click.echo(f"{counted(n, 'batch')} dropped; their {counted(events, 'event')} are in the dead letters")
    if in_bucket:
        bucket = _bucket(cfg)
        assert bucket is not None
        click.echo(f"{counted(held.drop(bucket[0], bucket[1], in_bucket), 'object')} moved to dropped/")
