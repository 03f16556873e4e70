"""Narrowing a load job's rejection down to the rows that caused it.

A load job is atomic: one value BigQuery cannot take (a GEOGRAPHY it
cannot parse, say) fails the whole job, and holding the whole batch back
would hold its good events with it. So a batch whose load is rejected for
its data is *split* into two parts, each staged, uploaded and loaded as a
batch of its own under the same exactly-once rules (deterministic part ids
and object names, a recorded load before every job, lookup before insert).
A part that fails again is split again; a part of one event that fails is
that event's fault, and it becomes a dead letter with BigQuery's reason.
When every part of a batch is loaded or dead, the batch's rows leave the
buffer. One bad row in n costs about 2 log2(n) small load jobs.

When both halves of a batch fail, the rejection is not confined to a few
rows (the table changed under the loader, or bad rows are spread through
it): the batch is quarantined whole with the reason, as before, rather
than dead-letter everything one event at a time.

A part's id is its root batch's id with ``~LO-HI``, its events' offsets in
the root; ``parent`` names the batch or part it was split from.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from bqspool.buffer import rows
from bqspool.buffer.store import now_us, transaction

from .ledger import (
    _BATCH_COLS,
    Batch,
    Fence,
    Load,
    _set_state,
    batch,
    check_fence,
    delete_rows,
    event_lines,
    load_batches,
)

TERMINAL = ("loaded", "dead")


@dataclass
class Rejection:
    """What a rejected load led to."""

    regrouped: int = 0  # batches of a group, now loaded one by one
    split: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)  # event ids dead-lettered
    quarantined: list[Batch] = field(default_factory=list)


def root_id(batch_id: str) -> str:
    return batch_id.partition("~")[0]


def fail_load(conn: sqlite3.Connection, load: Load, error: str, fence: Fence | None = None) -> Rejection:
    """A job rejected its data: regroup, split, dead-letter or quarantine (see the module docstring)."""
    members = load_batches(conn, load.load_id)
    out = Rejection()
    with transaction(conn):
        check_fence(conn, fence)
        conn.execute(
            "UPDATE loads SET state = 'failed', error = ?, updated_us = ? WHERE load_id = ? AND state = 'pending'",
            (error, now_us(), load.load_id),
        )
        live = [b for b in members if b.state == "uploaded"]
        if len(live) > 1:
            conn.execute(
                "UPDATE batches SET load_id = NULL, solo = 1, updated_us = ? WHERE load_id = ? AND state = 'uploaded'",
                (now_us(), load.load_id),
            )
            out.regrouped = len(live)
            return out
        if not live:
            return out
        (b,) = live
        if b.rows <= 1:
            out.dead += _dead_letter(conn, b, f"rejected by load job {load.job_id}: {error}")
            return out
        root = b if b.parent is None else batch(conn, root_id(b.batch_id))
        assert root is not None
        if b.parent == root.batch_id and _sibling_split(conn, b) and not _any_loaded(conn, root):
            _quarantine_whole(conn, root, error)
            out.quarantined.append(root)
            return out
        _split(conn, b)
        out.split.append(b.batch_id)
    return out


def _sibling_split(conn: sqlite3.Connection, b: Batch) -> bool:
    return (
        conn.execute(
            "SELECT count(*) FROM batches WHERE parent = ? AND batch_id != ? AND state = 'split'",
            (b.parent, b.batch_id),
        ).fetchone()[0]
        > 0
    )


def _any_loaded(conn: sqlite3.Connection, root: Batch) -> bool:
    return (
        conn.execute(
            "SELECT count(*) FROM batches WHERE substr(batch_id, 1, ?) = ? AND state = 'loaded'",
            (len(root.batch_id) + 1, root.batch_id + "~"),
        ).fetchone()[0]
        > 0
    )


def _quarantine_whole(conn: sqlite3.Connection, root: Batch, error: str) -> None:
    conn.execute("DELETE FROM batches WHERE substr(batch_id, 1, ?) = ?", (len(root.batch_id) + 1, root.batch_id + "~"))
    _set_state(
        conn,
        root.batch_id,
        ("split", "uploaded"),
        "state = 'quarantined', held_from = 'uploaded', load_id = NULL, error = ?",
        (f"both halves of the batch were rejected, so it is not a few bad rows: {error}",),
    )


def _split(conn: sqlite3.Connection, b: Batch) -> None:
    lo, hi = (0, b.rows) if b.part_lo is None else (b.part_lo, b.part_hi or 0)
    mid = (lo + hi) // 2
    root = root_id(b.batch_id)
    folder = b.object_name.rpartition("/")[0]
    now = now_us()
    for a, z in ((lo, mid), (mid, hi)):
        pid = f"{root}~{a}-{z}"
        conn.execute(
            "INSERT OR IGNORE INTO batches (batch_id, stream, seq_lo, seq_hi, rows, nbytes, day, state, object_name, "
            "solo, parent, part_lo, part_hi, created_us, updated_us) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'sealed', ?, 1, ?, ?, ?, ?, ?)",
            (
                pid,
                b.stream,
                b.seq_lo,
                b.seq_hi,
                z - a,
                b.nbytes * (z - a) // max(b.rows, 1),
                b.day,
                f"{folder}/{pid}.parquet",
                b.batch_id,
                a,
                z,
                now,
                now,
            ),
        )
    _set_state(conn, b.batch_id, ("uploaded",), "state = 'split', load_id = NULL", ())


def _dead_letter(conn: sqlite3.Connection, b: Batch, reason: str) -> list[str]:
    """Make a one-event batch or part a dead letter (caller's transaction); returns its event id."""
    dead = [rows.dead_row(b.stream, rows.event_id_of(line), line, reason) for line in event_lines(conn, b)]
    rows.insert_dead(conn, dead)
    if b.parent is None:
        delete_rows(conn, b)
    _set_state(conn, b.batch_id, ("uploaded",), "state = 'dead', load_id = NULL, error = ?", (reason,))
    if b.parent is not None:
        settle(conn, b.parent)
    return [d[1] for d in dead]


def settle(conn: sqlite3.Connection, parent_id: str) -> None:
    """Once every part of ``parent_id`` is loaded or dead, so is it; a root's rows then leave the buffer."""
    states = [r[0] for r in conn.execute("SELECT state FROM batches WHERE parent = ?", (parent_id,))]
    if not states or any(s not in TERMINAL for s in states):
        return
    row = conn.execute(f"SELECT {_BATCH_COLS} FROM batches WHERE batch_id = ?", (parent_id,)).fetchone()
    if row is None or row[7] != "split":
        return
    parent = Batch(*row)
    if parent.parent is None:
        delete_rows(conn, parent)
    _set_state(conn, parent.batch_id, ("split",), "state = 'loaded', error = NULL", ())
    if parent.parent is not None:
        settle(conn, parent.parent)
