"""Dead letters: list them, replay them into the buffer, purge them.

A dead-letter row holds what could not become a pending event: an invalid
event (its raw payload, JSON where possible), a line that was not JSON
(``bqspool append --dead-letter``), or a stored row of a quarantined batch
that was dropped (``bqspool quarantine drop``). Nothing removes them but
:func:`replay` and :func:`purge`.

Replay checks each row again against the current schema set, typically
after the schema or the app was fixed, and turns the rows that now pass
into pending events *with their original event ids*: a replayed event is
the same event, so downstream de-duplication on ``_event_id`` still holds.
Each step deletes the dead-letter rows and inserts their events in one
transaction, so a replay killed at any moment neither loses nor doubles
anything; running it again picks up where it stopped.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bqspool.schemas.coerce import Coercer
from bqspool.schemas.decode import decoder
from bqspool.schemas.definition import EVENT_ID
from bqspool.schemas.errors import ConfigError, ValidationError

from . import rows, store
from .ids import uuid7

STEP = 500  # rows per replay transaction: keeps the write lock short for appenders


@dataclass
class ReplayReport:
    replayed: int = 0
    still_bad: list[tuple[int, str]] = field(default_factory=list)  # (dead-letter id, why it cannot be replayed)


def selection(
    stream: str | None = None, ids: list[int] | None = None, before_us: int | None = None
) -> tuple[str, list]:
    """A WHERE condition over ``dead_letters`` (all rows when nothing is given) and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    if stream is not None:
        clauses.append("stream = ?")
        params.append(stream)
    if ids is not None:
        clauses.append(f"id IN ({','.join('?' * len(ids))})")
        params += list(ids)
    if before_us is not None:
        clauses.append("created_us < ?")
        params.append(before_us)
    return (" AND ".join(clauses) or "1"), params


def newest(conn: sqlite3.Connection, limit: int | None, stream: str | None) -> list[dict[str, Any]]:
    """The newest dead letters (all with ``limit=None``), of one stream or all."""
    where, params = selection(stream)
    return rows.dead_letters(conn, where, params, newest=True, limit=-1 if limit is None else limit)


def _pages(
    conn: sqlite3.Connection, stream: str | None, ids: list[int] | None, step: int
) -> Iterator[list[dict[str, Any]]]:
    """The matching rows, oldest first, ``step`` at a time (each page a fresh query: safe to write between)."""
    where, params = selection(stream, ids)
    last = 0
    while True:
        page = rows.dead_letters(conn, where, params, after_id=last, limit=step)
        if not page:
            return
        last = page[-1]["id"]
        yield page


def _event_of(row: Mapping[str, Any], coercer: Coercer) -> Any:
    """The event a dead-letter row holds, as an app would append it; ValueError if there is none."""
    try:
        value = json.loads(row["payload"])
    except ValueError as exc:
        raise ValueError(f"payload is not JSON ({exc})") from None
    if isinstance(value, dict) and row["event_id"] and value.get(EVENT_ID) == row["event_id"]:
        # A stored row, from a dropped quarantined batch: stored values
        # (epoch microseconds, base64, JSON text) go back to Python values
        # first, or coercion would read them as something else.
        table = coercer.table
        gone = sorted(set(value) - {EVENT_ID} - {f.name for f in table.fields})
        if gone:
            raise ValueError(f"stored row has columns the table no longer has: {', '.join(gone)}")
        try:
            event = decoder(table)(value)
        except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
            raise ValueError(f"stored row does not decode: {exc}") from None
        event.pop(EVENT_ID, None)  # the id goes back in as the row's, not as a field
        return event
    return value


def replay(
    conn: sqlite3.Connection,
    coercers: Mapping[str, Coercer],
    *,
    stream: str | None = None,
    ids: list[int] | None = None,
    busy_timeout_s: float = 30.0,
    step: int = STEP,
) -> ReplayReport:
    """Move the matching dead letters that now validate back into the buffer as pending events.

    Rows that still fail stay where they are, unchanged; the report gives
    each one's id and current reason.
    """
    report = ReplayReport()
    for page in _pages(conn, stream, ids, step):
        good = []
        for row in page:
            coercer = coercers.get(row["stream"]) if row["stream"] is not None else None
            if coercer is None:
                report.still_bad.append((row["id"], f"stream {row['stream']!r} is not in the schema set"))
                continue
            try:
                data = coercer.encode(_event_of(row, coercer), row["event_id"] or uuid7())
            except (ValueError, ValidationError) as exc:
                report.still_bad.append((row["id"], str(exc)))
                continue
            good.append((row["id"], row["stream"], data))
        if not good:
            continue
        now = store.now_us()
        with store.transaction(conn, busy_timeout_s=busy_timeout_s):
            report.replayed += sum(rows.revive(conn, dead_id, name, data, now) for dead_id, name, data in good)
    return report


def purge(
    conn: sqlite3.Connection,
    *,
    stream: str | None = None,
    ids: list[int] | None = None,
    before_us: int | None = None,
    everything: bool = False,
    busy_timeout_s: float = 30.0,
) -> int:
    """Delete the matching dead letters; returns how many.

    At least one of ``stream``, ``ids``, ``before_us`` is required, or
    ``everything=True``: an empty selection never means "all".
    """
    if not everything and stream is None and ids is None and before_us is None:
        raise ConfigError("purge needs a selection (stream, ids, before) or everything=True")
    where, params = selection(stream, ids, before_us)
    with store.transaction(conn, busy_timeout_s=busy_timeout_s):
        return rows.delete_dead(conn, where, params)
