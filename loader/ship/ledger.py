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
``loads`` and ``jobs`` tables, which nothing reads any more.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass

from bqspool.buffer import rows
from bqspool.buffer.store import now_us, transaction

from .lease import Fence, acquire_lease, check_fence, new_holder, release_lease, renew_lease  # noqa: F401

LOADED_RETENTION_US = 7 * 86_400 * 1_000_000  # loaded batch rows kept this long for `status`
LIVE_STATES = ("sealed", "staged", "uploaded")  # a batch in one of these may still be shipped


@dataclass(frozen=True)
class Batch:
    batch_id: str
    stream: str
    seq_lo: int
    seq_hi: int
    rows: int
    nbytes: int
    day: str
    state: str
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
        # Parts of a batch a load job rejected, bisected to find the bad
        # rows (bisect.py), and the state a quarantined batch was held in.
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


def summary(conn: sqlite3.Connection) -> dict:
    """What ``bqspool status`` shows of the ship stage: batches by state, and who ships.
    (The commit stage's view, load jobs and budgets, is in the bucket: ``commitlog.status``.)"""
    states = dict(conn.execute("SELECT state, count(*) FROM batches GROUP BY state").fetchall())
    lease_row = conn.execute(
        "SELECT holder FROM lease WHERE name = 'drain' AND holder != '' AND expires_us > ?", (now_us(),)
    ).fetchone()
    return {
        "batches": states,
        "quarantined": states.get("quarantined", 0),
        "shipping": lease_row[0] if lease_row else None,
    }


def quarantined_rows(conn: sqlite3.Connection) -> dict[str, int]:
    """Events in quarantined batches, per stream (none where the loader never ran)."""
    try:
        found = conn.execute("SELECT stream, SUM(rows) FROM batches WHERE state = 'quarantined' GROUP BY stream")
        return {stream: int(n) for stream, n in found}
    except sqlite3.OperationalError:  # no batches table: nothing was ever sealed
        return {}


def content_name(placeholder: str, batch_id: str, digest: str, events: int, appended_ms: int | None = None) -> str:
    """A batch's object name: its folder and id, a digest of its rows, when its
    oldest event was appended (``-tMILLISECONDS``, for the append-to-loaded
    delay: see ``commitlog.appended_at``) and its number of events
    (``-nEVENTS``, which the committer counts by: see ``commitlog.events_in``).

    Two different batches never share an object name (nor, so, a job id)
    even when two hosts run copies of one buffer file, whose batch ids
    coincide: the digest covers each row's seq, events, size and append time
    to the microsecond (:func:`seal`), which two copies appending their own
    events do not share. The name is fixed when the batch is sealed, so the
    upload of a large batch can start while it is being staged. A batch
    sealed by an earlier version (named ``BATCH_ID.parquet`` until staged)
    gets the digest of its Parquet file when staged instead.
    """
    folder = placeholder.rpartition("/")[0]
    appended = f"-t{appended_ms}" if appended_ms is not None else ""
    return f"{folder}/{batch_id}-{digest[:20]}{appended}-n{events}.parquet"


def unnamed(b: Batch) -> bool:
    """Whether ``b`` still has a placeholder name (sealed by an earlier version):
    it is named by its staged file's digest in :func:`mark_staged`."""
    return b.object_name.endswith(f"/{b.batch_id}.parquet")


def _oldest_append_ms(conn: sqlite3.Connection, b: Batch) -> int | None:
    if b.parent is not None:
        return None  # a part of a split batch: its rows are its parent's
    oldest = rows.oldest_created_us(conn, b.stream, b.seq_lo, b.seq_hi)
    return oldest // 1000 if oldest is not None else None


# -- sealing ------------------------------------------------------------------


def seal(
    conn: sqlite3.Connection,
    stream: str,
    buffer_id: str,
    prefix: str,
    max_rows: int,
    max_bytes: int,
    fence: Fence | None = None,
) -> int:
    """Seal every unsealed row of ``stream`` into batches; returns how many batches.

    Unsealed rows are those above the highest sealed seq of the stream:
    appenders commit under the same write lock, so no row can later appear
    below a range sealed here.
    """
    made = 0
    day = time.strftime("%Y-%m-%d", time.gmtime())
    with transaction(conn):
        check_fence(conn, fence)
        top = conn.execute("SELECT coalesce(max(seq_hi), 0) FROM batches WHERE stream = ?", (stream,)).fetchone()[0]
        lo = None
        events = nbytes = 0
        last = top
        now = now_us()
        pending: list[tuple] = []

        digest = hashlib.sha256()
        oldest = 0

        def close(hi: int) -> None:
            nonlocal made
            batch_id = f"{stream}-{buffer_id[:16]}-{lo:012d}-{hi:012d}"
            placeholder = f"{prefix.strip('/')}/{stream}/{day}/{batch_id}.parquet"
            name = content_name(placeholder, batch_id, digest.hexdigest(), events, oldest // 1000)
            pending.append((batch_id, stream, lo, hi, events, nbytes, day, "sealed", name, now, now))
            made += 1

        # A stored row (up to 1,000 events) is never split, so a batch can
        # go past max_rows/max_bytes by less than one row.
        for seq, n, size, created in rows.rows_after(conn, stream, top):
            if lo is not None and (events + n > max_rows or nbytes + size > max_bytes):
                close(last)
                lo = None
            if lo is None:
                lo, events, nbytes = seq, 0, 0
                digest, oldest = hashlib.sha256(), created
            events += n
            nbytes += size
            oldest = min(oldest, created)
            digest.update(f"{seq} {n} {size} {created}\n".encode())
            last = seq
        if lo is not None:
            close(last)
        conn.executemany(
            "INSERT INTO batches (batch_id, stream, seq_lo, seq_hi, rows, nbytes, day, state, object_name, "
            "created_us, updated_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            pending,
        )
    return made


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
    conn: sqlite3.Connection, b: Batch, size: int, digest: str | None = None, fence: Fence | None = None
) -> str | None:
    """Record the staged file; returns the batch's object name, or None if it was
    not ``sealed`` any more. ``digest`` (of the file) names an :func:`unnamed` batch."""
    name = b.object_name
    if unnamed(b):
        assert digest is not None, "a batch sealed by an earlier version is named by its file's digest"
        name = content_name(b.object_name, b.batch_id, digest, b.rows, _oldest_append_ms(conn, b))
    with transaction(conn):
        check_fence(conn, fence)
        ok = _set_state(
            conn, b.batch_id, ("sealed",), "state = 'staged', object_size = ?, object_name = ?", (size, name)
        )
    return name if ok else None


def adopt_legacy(conn: sqlite3.Connection, staged_prefix: str, fence: Fence | None = None) -> tuple[int, int]:
    """Batches an earlier version staged or uploaded but never loaded go back to
    ``sealed``, named for ``staged/``, to be shipped like any other; returns
    (adopted, left).

    One that was already in a load group is left alone and counted: its job
    may have loaded it, and only the version that submitted it can tell.
    """
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
            name = f"{staged_prefix.strip('/')}/{stream}/{day}/{batch_id}.parquet"
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
    conn: sqlite3.Connection, b: Batch, checksum: str, fault=None, fence: Fence | None = None
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
