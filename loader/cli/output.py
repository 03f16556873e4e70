"""One output convention for every command that prints rows or a report (sqlite-utils' own).

- rows (``query``, ``dead-letters list``): an aligned table by default;
  ``--json`` one JSON array, ``--nl`` one JSON object per line, ``--csv``;
- a report (``status``, ``drain``, ``cost``, ...): lines for people by
  default, ``--json`` one JSON object.

In JSON, times are ISO 8601 strings (UTC) and a value that holds JSON (an
event's payload) is that JSON, not a string of it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

import click

FORMATS = ("table", "json", "nl", "csv")


def rows_format(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``, ``--nl`` and ``--csv`` as one ``fmt`` argument ("table" when none is given)."""
    fn = click.option("--csv", "fmt", flag_value="csv", help="Comma-separated values, a header first.")(fn)
    fn = click.option("--nl", "fmt", flag_value="nl", help="One JSON object per line (NDJSON).")(fn)
    fn = click.option("--json", "fmt", flag_value="json", help="One JSON array of objects.")(fn)
    return click.option("--table", "fmt", flag_value="table", default=True, help="An aligned table (the default).")(fn)


def iso(us: int | float | None) -> str | None:
    """Microseconds since the epoch as ISO 8601 in UTC, to the microsecond."""
    if us is None:
        return None
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC).isoformat().replace("+00:00", "Z")


def json_value(value: Any) -> Any:
    """A value as JSON shows it: times ISO 8601, bytes as text; the rest as it is."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return value


def _cell(value: Any) -> str:
    value = json_value(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else str(value)


def emit_rows(rows: Sequence[dict], fmt: str, columns: Sequence[str] | None = None) -> None:
    """Print ``rows`` in ``fmt`` (see the module)."""
    columns = list(columns or (rows[0] if rows else []))
    if fmt == "json":
        click.echo(json.dumps([json_value(r) for r in rows], indent=2, ensure_ascii=False))
    elif fmt == "nl":
        for r in rows:
            click.echo(json.dumps(json_value(r), ensure_ascii=False))
    elif fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(r.get(c)) for c in columns] for r in rows)
        click.echo(out.getvalue(), nl=False)
    else:
        cells = [[_cell(r.get(c)) for c in columns] for r in rows]
        widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
        click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for row in cells:
            click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
