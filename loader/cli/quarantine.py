"""``bqspool quarantine list|retry|drop``: batches held back from loading.

Retry and drop take the drain lease, so they never race a running drain
(exit 4 while one runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from .base import config_option, existing_buffer, load_config, main


@main.group()
def quarantine() -> None:
    """List, retry or drop batches a load job rejected."""


@quarantine.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: a list of batches.")
def quarantine_list(config_path: str | None, as_json: bool) -> None:
    """List quarantined batches with their reasons."""
    from .. import holdback

    held = holdback.list_held(existing_buffer(Path(load_config(config_path).buffer)))
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
    from .. import holdback

    n = holdback.retry_held(existing_buffer(Path(load_config(config_path).buffer)), list(batch_ids) or None)
    click.echo(f"{n} batches will be loaded by the next drain")


@quarantine.command("drop")
@config_option
@click.argument("batch_ids", nargs=-1, required=True)
def quarantine_drop(config_path: str | None, batch_ids: tuple[str, ...]) -> None:
    """Give up on quarantined batches: their events move to dead letters."""
    from .. import holdback

    n, events = holdback.drop_held(existing_buffer(Path(load_config(config_path).buffer)), list(batch_ids))
    click.echo(f"{n} batches dropped; their {events} events are in the dead letters")
