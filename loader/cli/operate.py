"""Operator commands: ``verify``, ``restore``, ``cost`` and ``query``."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time

import click
from bqspool.schemas import load_schema_set

from .base import EXIT_ERROR, EXIT_FOUND, main, settings
from .output import emit_rows, rows_format

json_flag = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _size(n: float | None) -> str:
    if n is None:
        return "not reported"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _dumps(data) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)


@main.command()
@json_flag
@click.option("--fix", is_flag=True, help="Apply the safe fixes: missing tables, new NULLABLE columns, options.")
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 3650), help="Days of partitions to audit.")
@click.option("--no-audit", is_flag=True, help="Compare the schema only; run no (billed) audit queries.")
def verify(as_json: bool, fix: bool, days: int, no_audit: bool) -> None:
    """Compare the live dataset with the schema set, and audit exactly-once delivery.

    Each difference is one line: the table, what the schema file says and
    what BigQuery has. --fix applies what is safe and refuses the rest with
    the reason. The audit counts, per table over the last --days days of
    partitions, rows against distinct _event_id values, and the rows held
    against the events the commit log says were loaded; it prints what its
    queries scan, since they are billed. Exit 0 when all matches, 1 on drift
    or duplicates.
    """
    from bqspool.schemas.errors import BqspoolError

    from ..clients import make_object_store, make_warehouse
    from ..layout import Layout
    from ..operate.audit import audit
    from ..operate.verify import drift
    from ..operate.verify import fix as apply_fixes

    cfg = settings()
    cfg.require("schemas", "project", "dataset")
    sset = load_schema_set(cfg.schemas)
    wh = make_warehouse(cfg, "verify")
    found = drift(wh, sset)
    fixed: list[str] = []
    failed: str | None = None  # a fix the warehouse refused: what was fixed before it stays said
    if fix and any(d.fix for d in found):
        try:
            apply_fixes(wh, sset, found, on_fixed=fixed.append)
        except BqspoolError as exc:
            failed = str(exc)
        found = drift(wh, sset)
    audits = []
    if not no_audit:  # each table's audit on its own: one that fails (a column changed by hand) stops no other
        store = make_object_store(cfg) if cfg.bucket else None
        audits = audit(wh, store, Layout(cfg.prefix), sset, days, _today(), progress=not as_json)
    bad = bool(found or failed or any(a.duplicated or a.error for a in audits))
    if as_json:
        doc = {"drift": [d.as_dict() for d in found], "fixed": fixed, "audit": [a.as_dict() for a in audits]}
        click.echo(_dumps({**doc, "fix_failed": failed, "ok": not bad}))
        sys.exit(EXIT_FOUND if bad else 0)
    _print_verify(found, fixed, failed, fix, f"{len(sset)} tables of {sset.name} match {cfg.project}.{cfg.dataset}")
    for a in audits:
        _print_audit(a, days)
    if audits:
        scanned = [a.scanned_bytes for a in audits if not a.missing and not a.error]
        total = None if any(s is None for s in scanned) else sum(s for s in scanned if s is not None)
        click.echo(f"the audit's queries scan {_size(total)} (billed at the on-demand query price)")
    sys.exit(EXIT_FOUND if bad else 0)


def _print_verify(found, fixed: list[str], failed: str | None, fix: bool, ok: str) -> None:
    for line in fixed:
        click.echo(f"fixed  {line}")
    if failed:
        click.echo(f"error: a fix failed after {len(fixed)} applied (listed above): {failed}", err=True)
    for d in found:
        click.echo(f"drift  {d}")
        if d.fix:
            click.echo(f"       --fix would {d.fix}")
        else:
            click.echo(f"       {'refused' if fix else 'not fixable here'}: {d.advice}")
    if not found:
        click.echo(f"schema ok: {ok}")


def _print_audit(a, days: int) -> None:
    if a.missing:
        click.echo(f"audit  {a.table}: no such table, nothing to count")
        return
    if a.error:
        click.echo(f"audit  {a.table}: could not count ({a.error}); see the drift above")
        return
    window = "the whole table (not partitioned)" if a.whole_table else f"the last {days} days of partitions"
    click.echo(
        f"audit  {a.table}: {a.rows} rows, {a.distinct_ids} distinct ids in {window}; "
        f"commit log: {a.logged_events} events loaded; difference {a.difference:+d}; scans {_size(a.scanned_bytes)}"
    )
    if a.duplicated:
        examples = ", ".join(f"{d['_event_id']} ({d['copies']} copies)" for d in a.duplicates)
        click.echo(f"DUPLICATES  {a.table}: {a.duplicated} rows are extra copies of an _event_id; e.g. {examples}")
    elif a.difference:
        click.echo(
            "       the difference is expected only at the window's edges: events stamped on another "
            "day than the one they were loaded"
        )


@main.command()
@click.option("--table", required=True, help="The schema set's table whose archive to restore.")
@click.option("--since", required=True, help="First day: YYYY-MM-DD, an ISO time, 'today' or Nd (N days ago).")
@click.option("--until", default="today", show_default=True, help="Last day, included.")
@click.option("--into", default=None, help="A new table to restore into (created as the schema file says).")
@click.option(
    "--wait",
    "wait_s",
    default=600.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to wait for another committer's lease before giving up (the copies stay staged).",
)
@json_flag
def restore(table: str, since: str, until: str, into: str | None, wait_s: float, as_json: bool) -> None:
    """Load archived objects of TABLE back into a table that lacks them.

    Objects are chosen by the day their batch was sealed, --since to --until.
    The target is TABLE itself (after it was deleted and set up again) or a
    new table (--into). A target that already holds rows of those batches is
    refused. Loads go through the commit machinery: deterministic job ids,
    the load-job budget and pacing, exactly once if killed and run again.
    """
    from ..clients import make_committer, make_object_store, make_warehouse
    from ..layout import Layout
    from ..operate.restore import Restore, parse_day

    cfg = settings()
    cfg.require("schemas", "project", "dataset", "bucket")
    today = _today()
    job = Restore(
        make_object_store(cfg),
        make_warehouse(cfg, "restore"),
        load_schema_set(cfg.schemas),
        Layout(cfg.prefix),
        table,
        parse_day(since, today),
        parse_day(until, today),
        into,
        commit=lambda on_loaded: make_committer(cfg, "restore", on_loaded=on_loaded).commit_once(),
        progress=sys.stderr.isatty() and not as_json,
        wait_s=wait_s,
    )
    report = job.run()
    if as_json:
        click.echo(_dumps(report.as_dict()))
    else:
        if report.created_table:
            click.echo(f"created table {report.target} as the schema file of {report.table} says")
        click.echo(
            f"restore {report.table} -> {report.target}, {report.since} to {report.until}: "
            f"{report.selected} archived objects ({report.events} events); "
            f"{report.copied} staged now, {report.resumed} by an earlier run"
        )
        click.echo(
            f"loaded {report.loaded_objects} of them ({report.loaded_events} events), "
            f"committed by {report.committed_by}"
        )
        for name in report.quarantined:
            click.echo(f"held back: {name} (see `bqspool quarantine list`)")
    complete = report.loaded_objects == report.selected and not report.quarantined
    sys.exit(0 if complete else EXIT_ERROR)


@main.command()
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 3650), help="Days to count.")
@json_flag
def cost(days: int, as_json: bool) -> None:
    """What ingestion, storage and queries cost over the last --days days.

    From what bqspool loaded (the commit log), the tables' and the archive's
    sizes, and the warehouse's query history where it keeps one; with the
    prices of the configuration ([price], dated by price.as_of).
    """
    from ..clients import make_object_store, make_warehouse
    from ..layout import Layout
    from ..operate.cost import cost as compute

    cfg = settings()
    cfg.require("schemas", "project", "dataset", "bucket")
    report = compute(
        make_object_store(cfg),
        make_warehouse(cfg, "cost"),
        Layout(cfg.prefix),
        load_schema_set(cfg.schemas),
        cfg,
        days,
        _today(),
        time.time(),
    )
    if as_json:
        click.echo(_dumps(report))
        return
    click.echo(f"cost {report['since']} to {report['until']} ({days} days), list prices as of {cfg.price_as_of}, USD")
    click.echo(
        f"{'table':30s} {'jobs':>6s} {'events':>10s} {'loaded':>10s} {'row size':>9s} {'class A':>8s} {'class B':>8s}"
    )
    for name, t in report["tables"].items():
        ops = t["storage_operations"]
        click.echo(
            f"{name:30s} {t['jobs']:>6d} {t['events']:>10d} {_size(t['parquet_bytes']):>10s} "
            f"{t['row_bytes']:>8.0f}B {ops['class_a']:>8d} {ops['class_b']:>8d}"
        )
    _print_ingestion(report["ingestion"])
    if any(t["row_bytes_from"] != "warehouse" for t in report["tables"].values() if t["events"]):
        click.echo("  row sizes from Parquet bytes (a lower bound): the warehouse does not report logical bytes")
    bq = report["bigquery_storage"]
    if bq["available"]:
        click.echo(
            f"BigQuery storage: {_size(bq['active_bytes'])} active, {_size(bq['long_term_bytes'])} long-term: "
            f"${bq['usd_month']:.4f} a month"
        )
    else:
        click.echo("BigQuery storage: not available here: the warehouse reports no table sizes for rows it holds")
    if report["archive"]:
        for cls, slot in sorted(report["archive"].items()):
            click.echo(
                f"archive {cls}: {slot['objects']} objects, {_size(slot['bytes'])}: ${slot['usd_month']:.4f} a month"
            )
    else:
        click.echo("archive: empty")
    _print_queries(report["queries"])


def _print_queries(q: dict) -> None:
    """``cost``'s query lines: every query job in the history, then bqspool's own (found by label)."""
    if not q["available"]:
        click.echo(f"queries: not available here: {q['reason']}")
        return
    click.echo(f"queries: {q['jobs']} jobs billed {_size(q['bytes_billed'])}: ${q['usd']:.4f}")
    own = q["bqspool"]
    roles = ", ".join(f"{r} {n}" for r, n in own["by_role"].items())
    click.echo(
        f"  of them bqspool's own (by label): {own['jobs']} jobs billed {_size(own['bytes_billed'])}: "
        f"${own['usd']:.4f}" + (f" ({roles})" if roles else "")
    )


def _print_ingestion(ing: dict) -> None:
    """``cost``'s ingestion lines: bqspool's path item by item, then each alternative and the ratio to it."""
    ops, moves = ing["storage_operations"], ing["lifecycle_transitions"]
    click.echo(f"ingestion of {ing['events']} events:")
    click.echo(f"  bqspool                      ${ing['bqspool_batch_loads_usd']:.4f}  (load jobs are free; this is:)")
    click.echo(
        f"    storage requests           ${ops['usd']:.4f}  ({ops['class_a']} class A, {ops['class_b']} class B)"
    )
    click.echo(f"    staging storage            ${ing['staging_storage_usd']:.4f}")
    click.echo(f"    archive storage            ${ing['archive_storage_usd']:.4f}  (over the window)")
    click.echo(f"    moves to COLDLINE          ${moves['usd']:.4f}  ({moves['files']} archive files)")
    for key, label, note in (
        ("legacy_streaming", "legacy streaming inserts", "each row billed as >= 1 KB"),
        ("storage_write_api", "Storage Write API", "after the free amount"),
        ("pubsub_bigquery_subscription", "Pub/Sub BigQuery subscription", "publish + subscription"),
    ):
        ratio = ing["ratio"][key]
        vs = f"bqspool is {ratio:.2f}x" if ratio is not None else "bqspool costs more than $0 here"
        click.echo(f"  {label:28s} ${ing[key + '_usd']:.4f}  ({note}; {vs})")


@main.command()
@click.argument("name", required=False)
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A query parameter (repeatable).")
@rows_format
def query(name: str | None, params: tuple[str, ...], fmt: str) -> None:
    """Run the schema set's query NAME (queries/NAME.sql) with query parameters.

    Without NAME, list the set's queries and their parameters. Values are
    sent as BigQuery query parameters, typed as the query file declares.
    Rows print as an aligned table; --json, --nl or --csv for machines.
    """
    from bqspool.schemas.errors import ValidationError

    from ..operate.queries import Analytics

    cfg = settings()
    cfg.require("schemas")
    if name is None:
        sset = load_schema_set(cfg.schemas)
        for q in sset.queries.values():
            args = (
                " ".join(f"{p.name}:{p.type}" + ("" if p.required else f"={p.default}") for p in q.params)
                or "(no parameters)"
            )
            click.echo(f"{q.name:24s} {args}\n{'':24s} {q.description}")
        if not sset.queries:
            click.echo(f"schema set {sset.name} has no queries (add queries/NAME.sql to it)")
        return
    given = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValidationError(f"--param {item!r}: write KEY=VALUE")
        given[key] = value
    rows = Analytics(cfg).run(name, given)
    if not rows and fmt == "table":
        click.echo("(no rows)")
        return
    emit_rows(rows, fmt)
