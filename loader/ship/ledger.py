"""The ship stage's durable state in the buffer file: lease and batches.

Every function here is one transaction, so every step of the ship is
recorded before the next begins and is safe to repeat after a crash. Every
state change is conditional on the state it expects (a shipped batch is
never staged, quarantined or shipped again) and, given a :class:`Fence`, on
the caller still holding the buffer's lease (see :mod:`.lease`).

Batch states: ``sealed`` (range fixed, and the object name, which carries
a digest of the rows) -> ``staged`` (Parquet written locally, size
recorded) -> ``shipped`` (the object is in the bucket, verified; the rows
are gone from ``events``). Held back: ``quarantined`` (kept with the error,
and the state it was held in, until retried or dropped). What happens to a
shipped object is the commit stage's business, recorded in the bucket (see
:mod:`.commitlog`). Files written by earlier versions may hold batches in
the states ``uploaded``, ``loaded``, ``split`` and ``dead`` and their
``loads`` and ``jobs`` tables, which nothing reads any more. An operator's
``quarantine drop`` leaves a batch ``dropped``, its events in the dead
letters.

Object names are the bucket's grammar (:mod:`bqspool.loader.layout`): a
batch is named when it is sealed, from a digest of its rows.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bqspool.buffer import rows
from bqspool.buffer.store import now_us, transaction

from ..layout import Layout, ObjectName
from .buffer_lease import Fence, check_fence

LOADED_RETENTION_US = 7 * 86_400 * 1_000_000  # loaded batch rows kept this long for `status`
BatchState = Literal["sealed", "staged", "shipped", "quarantined", "dropped", "uploaded", "loaded", "split", "dead"]
LIVE_STATES: tuple[BatchState, ...] = ("sealed", "staged", "uploaded")  # a batch in one of these may still be shipped


@dataclass(frozen=True)
class Batch:
    batch_id: str
    stream: str
    seq_lo: int
    seq_hi: int
    rows: int
    nbytes: int
    day: str
    state: BatchState
    object_name: str
    object_size: int | None
    object_crc32c: str | None
    load_id: str | None
    solo: int
    error: str | None
    parent: str | None = None  # the batch (or part) this part was split from
    part_lo: int | None = None  # a part's events: offsets [part_lo, part_hi) in its root batch
    part_hi: int | None = None
    held_from: str | None = None  # the state a quarantined batch was held in


_BATCH_COLS = (
    "batch_id, stream, seq_lo, seq_hi, rows, nbytes, day, state, object_name, object_size, "
    "object_crc32c, load_id, solo, error, parent, part_lo, part_hi, held_from"
)


# The ledger's own changes to its tables, applied by prepare() in order and
# recorded as meta 'ledger_version'. Never edit a shipped step: add one.
LEDGER_STEPS: dict[int, list[str]] = {
    1: [
        # The fencing token: it grows each time the drain lease is taken,
        # and every state change checks it (lease.py).
        "ALTER TABLE lease ADD COLUMN token INTEGER NOT NULL DEFAULT 0",
        # Parts of a batch a load job rejected, split by earlier versions to
        # find the bad rows, and the state a quarantined batch was held in.
        "ALTER TABLE batches ADD COLUMN parent TEXT",
        "ALTER TABLE batches ADD COLUMN part_lo INTEGER",
        "ALTER TABLE batches ADD COLUMN part_hi INTEGER",
        "ALTER TABLE batches ADD COLUMN held_from TEXT",
        "CREATE INDEX batches_parent ON batches (parent) WHERE parent IS NOT NULL",
    ],
}


def prepare(conn: sqlite3.Connection) -> None:
    """Bring the loader's tables in an opened buffer file to this version. Idempotent and cheap."""
    want = max(LEDGER_STEPS)
    row = conn.execute("SELECT value FROM meta WHERE key = 'ledger_version'").fetchone()
    if row and int(row[0]) >= want:
        return
    with transaction(conn):
        row = conn.execute("SELECT value FROM meta WHERE key = 'ledger_version'").fetchone()
        version = int(row[0]) if row else 0
        for step in range(version + 1, want + 1):
            for sql in LEDGER_STEPS[step]:
                conn.execute(sql)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('ledger_version', ?)", (str(want),))


def states(conn: sqlite3.Connection) -> dict[str, int]:
    """How many batches are in each state."""
    return dict(conn.execute("SELECT state, count(*) FROM batches GROUP BY state").fetchall())


def lease_holder(conn: sqlite3.Connection) -> str | None:
    """Who holds the buffer's lease now, or None."""
    row = conn.execute(
        "SELECT holder FROM lease WHERE name = 'drain' AND holder != '' AND expires_us > ?", (now_us(),)
    ).fetchone()
    return row[0] if row else None


def quarantined_rows(conn: sqlite3.Connection) -> dict[str, int]:
    """Events in quarantined batches, per stream (none where the loader never ran)."""
    try:
        found = conn.execute("SELECT stream, SUM(rows) FROM batches WHERE state = 'quarantined' GROUP BY stream")
        return {stream: int(n) for stream, n in found}
    except sqlite3.OperationalError:  # no batches table: nothing was ever sealed
        return {}


def unnamed(b: Batch) -> bool:
    """Whether ``b`` still has a placeholder name (sealed by an earlier version):
    it is named by its staged file's digest in :func:`mark_staged`.

    Two different batches never share an object name (nor, so, a job id)
    even when two hosts run copies of one buffer file, whose batch ids
    coincide: the digest covers each row's seq, events, size and append time
    to the microsecond (:func:`seal`), which two copies appending their own
    events do not share."""
    return b.object_name.endswith("/" + ObjectName.placeholder("", "", b.batch_id).file)


def _oldest_append_ms(conn: sqlite3.Connection, b: Batch) -> int | None:
    if b.parent is not None:
        return None  # a part of a split batch: its rows are its parent's
    oldest = rows.oldest_created_us(conn, b.stream, b.seq_lo, b.seq_hi)
    return oldest // 1000 if oldest is not None else None


# -- sealing ------------------------------------------------------------------


@dataclass(frozen=True)
class _Range:
    """A range of stored rows to seal as one batch, with what names it."""

    lo: int
    hi: int
    events: int
    nbytes: int
    digest: str  # over each row's seq, events, size and append time
    oldest_us: int


def _ranges(
    conn: sqlite3.Connection, stream: str, top: int, max_rows: int, max_bytes: int, cut: int = 0, whole: bool = False
) -> list[_Range]:
    """The stream's rows above seq ``top``, cut into ranges of at most ``max_rows``
    events and ``max_bytes`` bytes, and after seq ``cut`` (a range never spans it).
    A stored row (up to 1,000 events) is never split, so a range can go past
    either size by less than one row. With ``whole``, only full ranges: the
    last one, short of both sizes, is left out."""
    out: list[_Range] = []
    lo = last = oldest = 0
    events = nbytes = 0
    digest = hashlib.sha256()
    for seq, n, size, created in rows.rows_after(conn, stream, top):
        if events and (events + n > max_rows or nbytes + size > max_bytes or last <= cut < seq):
            out.append(_Range(lo, last, events, nbytes, digest.hexdigest(), oldest))
            events = 0
        if not events:
            lo, nbytes, oldest, digest = seq, 0, created, hashlib.sha256()
        events += n
        nbytes += size
        oldest = min(oldest, created)
        digest.update(f"{seq} {n} {size} {created}\n".encode())
        last = seq
    if events and not (whole and events < max_rows and nbytes < max_bytes):
        out.append(_Range(lo, last, events, nbytes, digest.hexdigest(), oldest))
    return out


def copied(conn: sqlite3.Connection) -> dict | None:
    """Where this file was found to be a copy (``buffer/opening.py``): its highest seq
    then (``seq``), the inodes and when; None for a file that never was."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'copied'").fetchone()
    return json.loads(row[0]) if row else None


def _copy_reason(found: dict) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(found["at_us"] / 1e6))
    return (
        f"this buffer file is a copy of another (found at {when}: inode {found['inode']}, created as "
        f"{found['from_inode']}); these events were pending when it was copied, so the original may ship them "
        "too. If the original is gone for good, `bqspool quarantine retry` ships them; else `bqspool quarantine "
        "drop` them"
    )


def seal(
    conn: sqlite3.Connection,
    stream: str,
    buffer_id: str,
    layout: Layout,
    max_rows: int,
    max_bytes: int,
    fence: Fence | None = None,
    whole: bool = False,
) -> int:
    """Seal every unsealed row of ``stream`` into batches, each named for
    ``staged/`` from a digest of its rows; returns how many batches. With
    ``whole``, only full batches: the rest stays unsealed, to fill one.

    Unsealed rows are those above the highest sealed seq of the stream:
    appenders commit under the same write lock, so no row can later appear
    below a range sealed here. In a file found to be a copy, the rows that
    were pending when it was copied are sealed quarantined, with the reason.
    """
    day = time.strftime("%Y-%m-%d", time.gmtime())
    with transaction(conn):
        check_fence(conn, fence)
        top = conn.execute("SELECT coalesce(max(seq_hi), 0) FROM batches WHERE stream = ?", (stream,)).fetchone()[0]
        hold = copied(conn)
        cut = hold["seq"] if hold and top < hold["seq"] else 0
        now = now_us()
        made = []
        for r in _ranges(conn, stream, top, max_rows, max_bytes, cut, whole):
            batch_id = f"{stream}-{buffer_id[:16]}-{r.lo:012d}-{r.hi:012d}"
            name = ObjectName.batch(stream, day, batch_id, r.digest, r.events, r.oldest_us // 1000)
            held = r.hi <= cut
            made.append(
                (
                    *(batch_id, stream, r.lo, r.hi, r.events, r.nbytes, day),
                    *("quarantined" if held else "sealed", layout.path("staged", name), now, now),
                    *(("sealed", _copy_reason(hold)) if held and hold else (None, None)),
                )
            )
        conn.executemany(
            "INSERT INTO batches (batch_id, stream, seq_lo, seq_hi, rows, nbytes, day, state, object_name, "
            "created_us, updated_us, held_from, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            made,
        )
    return len(made)


# -- reading ------------------------------------------------------------------


def batches(conn: sqlite3.Connection, state: str | None = None, stream: str | None = None) -> list[Batch]:
    sql = f"SELECT {_BATCH_COLS} FROM batches"
    where, params = [], []
    if state:
        where.append("state = ?")
        params.append(state)
    if stream:
        where.append("stream = ?")
        params.append(stream)
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [Batch(*r) for r in conn.execute(sql + " ORDER BY stream, seq_lo, coalesce(part_lo, -1)", params)]


def batch(conn: sqlite3.Connection, batch_id: str) -> Batch | None:
    """One batch as it is now in the file (not as a caller's list remembers it)."""
    row = conn.execute(f"SELECT {_BATCH_COLS} FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
    return Batch(*row) if row else None


# -- transitions --------------------------------------------------------------


def _set_state(conn: sqlite3.Connection, batch_id: str, expect: tuple[str, ...], sets: str, params: tuple) -> bool:
    """``UPDATE batches SET <sets>`` where the batch is in one of ``expect``; whether it was."""
    marks = ",".join("?" * len(expect))
    return (
        conn.execute(
            f"UPDATE batches SET {sets}, updated_us = ? WHERE batch_id = ? AND state IN ({marks})",
            (*params, now_us(), batch_id, *expect),
        ).rowcount
        == 1
    )


def mark_staged(
    conn: sqlite3.Connection,
    b: Batch,
    size: int,
    digest: str | None = None,
    fence: Fence | None = None,
    layout: Layout | None = None,
) -> str | None:
    """Record the staged file; returns the batch's object name, or None if it was
    not ``sealed`` any more. ``digest`` (of the file) names an :func:`unnamed`
    batch, in ``layout``'s staged area."""
    name = b.object_name
    if unnamed(b):
        assert digest is not None and layout is not None, "a batch sealed by an earlier version is named when staged"
        old = layout.name_of(b.object_name)
        fresh = ObjectName.batch(old.table, old.day, b.batch_id, digest, b.rows, _oldest_append_ms(conn, b))
        name = layout.path("staged", fresh)
    with transaction(conn):
        check_fence(conn, fence)
        ok = _set_state(
            conn, b.batch_id, ("sealed",), "state = 'staged', object_size = ?, object_name = ?", (size, name)
        )
    return name if ok else None


def adopt_legacy(conn: sqlite3.Connection, layout: Layout, fence: Fence | None = None) -> tuple[int, int]:
    """Batches an earlier version staged or uploaded but never loaded go back to
    ``sealed``, named for ``staged/``, to be shipped like any other; returns
    (adopted, left).

    One that was already in a load group is left alone and counted: its job
    may have loaded it, and only the version that submitted it can tell.
    """
    staged_prefix = layout.staged()
    with transaction(conn):
        check_fence(conn, fence)
        # Staged under the old layout too: their objects, if any, were never loaded.
        old_staged = conn.execute(
            "SELECT batch_id, stream, day FROM batches WHERE state = 'staged' AND parent IS NULL "
            "AND substr(object_name, 1, ?) != ?",
            (len(staged_prefix.strip("/")) + 1, staged_prefix.strip("/") + "/"),
        ).fetchall()
        rows_ = conn.execute(
            "SELECT batch_id, stream, day, load_id FROM batches WHERE state = 'uploaded' AND parent IS NULL"
        ).fetchall()
        adopted = 0
        for batch_id, stream, day, load_id in [(*r, None) for r in old_staged] + rows_:
            if load_id is not None:
                continue
            name = layout.path("staged", ObjectName.placeholder(stream, day, batch_id))
            adopted += _set_state(
                conn, batch_id, ("uploaded", "staged"), "state = 'sealed', object_name = ?, object_size = NULL", (name,)
            )
    return adopted, len(old_staged) + len(rows_) - adopted


def delete_rows(conn: sqlite3.Connection, b: Batch) -> int:
    """Delete a whole batch's rows with their pending bytes (in the caller's
    transaction); returns how many events they held."""
    return rows.delete_range(conn, b.stream, b.seq_lo, b.seq_hi)


def event_lines(conn: sqlite3.Connection, b: Batch) -> list[str]:
    """The stored lines of a part's events (or of a whole batch), in order."""
    first, last = (0, b.rows) if b.part_lo is None else (b.part_lo, b.part_hi or 0)
    return rows.lines(conn, b.stream, b.seq_lo, b.seq_hi, first, last)


def mark_shipped(
    conn: sqlite3.Connection,
    b: Batch,
    checksum: str,
    fault: Callable[[str], None] | None = None,
    fence: Fence | None = None,
) -> int | None:
    """The batch's object is in the bucket, verified: the object is the durable
    copy now, so the batch's rows leave the buffer in the transaction that marks
    it ``shipped``. Returns the events handed over, or None if it was not ``staged``."""
    with transaction(conn):
        check_fence(conn, fence)
        now = now_us()
        if not _set_state(conn, b.batch_id, ("staged",), "state = 'shipped', object_crc32c = ?", (checksum,)):
            return None
        if fault:
            fault("mid_ship")
        events = delete_rows(conn, b)
        conn.execute(
            "DELETE FROM batches WHERE state IN ('shipped', 'loaded', 'dead', 'dropped') AND updated_us < ?",
            (now - LOADED_RETENTION_US,),
        )
    return events


def quarantine(conn: sqlite3.Connection, batch_id: str, error: str, fence: Fence | None = None) -> bool:
    """Hold a live batch out of loading, with the reason, until retried or
    dropped; whether it was live (a loaded batch is never quarantined)."""
    with transaction(conn):
        check_fence(conn, fence)
        return _set_state(
            conn, batch_id, LIVE_STATES, "held_from = state, state = 'quarantined', error = ?, load_id = NULL", (error,)
        )
