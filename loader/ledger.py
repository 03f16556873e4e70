"""The loader's durable state in the buffer file: lease, batches, loads, jobs.

Every function here is one transaction, so every step of the drain is
recorded before the next begins and is safe to repeat after a crash. Every
state change is conditional on the state it expects (a batch that was
loaded is never staged, quarantined or acked again) and, given a
:class:`Fence`, on the caller still holding the drain lease (see
:mod:`.lease`).

Batch states: ``sealed`` (range fixed) -> ``staged`` (Parquet written
locally; size, crc32c and the object name, which carries a digest of the
content, recorded) -> ``uploaded`` (object in GCS) -> ``loaded`` (rows
deleted from ``events``). Held back: ``quarantined`` (kept with the error,
and the state it was held in, until retried or dropped). A batch whose
data a load job rejected is bisected into *parts* (``split``; see
:mod:`.bisect`). A batch in a load group has ``load_id`` set; a load's id
derives from its objects' names, its job id from the load id and attempt.
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
LIVE_STATES = ("sealed", "staged", "uploaded")  # a batch in one of these may still be loaded


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


@dataclass(frozen=True)
class Load:
    load_id: str
    stream: str
    attempt: int
    job_id: str
    state: str
    error: str | None


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
    """What ``bqspool status`` shows of the loader: batches by state, load jobs
    per table in the last 24 h (the daily budget counts them) and who drains."""
    states = dict(conn.execute("SELECT state, count(*) FROM batches GROUP BY state").fetchall())
    since = now_us() - 86_400 * 1_000_000
    jobs = dict(
        conn.execute("SELECT stream, count(*) FROM jobs WHERE submitted_us > ? GROUP BY stream", (since,)).fetchall()
    )
    lease_row = conn.execute(
        "SELECT holder FROM lease WHERE name = 'drain' AND holder != '' AND expires_us > ?", (now_us(),)
    ).fetchone()
    return {
        "batches": states,
        "quarantined": states.get("quarantined", 0),
        "jobs_24h": jobs,
        "draining": lease_row[0] if lease_row else None,
    }


def job_id_for(stream: str, load_id: str, attempt: int) -> str:
    # Letters, digits, _ and - only, well under 1,024 characters.
    return f"bqspool_{stream}_{load_id}_{attempt}"


def content_name(placeholder: str, batch_id: str, digest: str) -> str:
    """A staged batch's object name: its seal-time name with a digest of its bytes.

    Two different batches never share an object name (nor, so, a job id)
    even when two hosts run copies of one buffer file, whose batch ids
    coincide; the same batch staged again gets the same name.
    """
    folder = placeholder.rpartition("/")[0]
    return f"{folder}/{batch_id}-{digest[:20]}.parquet"


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

        def close(hi: int) -> None:
            nonlocal made
            batch_id = f"{stream}-{buffer_id[:16]}-{lo:012d}-{hi:012d}"
            name = f"{prefix.strip('/')}/{stream}/{day}/{batch_id}.parquet"
            pending.append((batch_id, stream, lo, hi, events, nbytes, day, "sealed", name, now, now))
            made += 1

        # A stored row (up to 1,000 events) is never split, so a batch can
        # go past max_rows/max_bytes by less than one row.
        for seq, n, size in rows.rows_after(conn, stream, top):
            if lo is not None and (events + n > max_rows or nbytes + size > max_bytes):
                close(last)
                lo = None
            if lo is None:
                lo, events, nbytes = seq, 0, 0
            events += n
            nbytes += size
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


def loads(conn: sqlite3.Connection, states: tuple[str, ...] = ("pending",)) -> list[Load]:
    marks = ",".join("?" * len(states))
    return [
        Load(*r)
        for r in conn.execute(
            f"SELECT load_id, stream, attempt, job_id, state, error FROM loads WHERE state IN ({marks}) "
            "ORDER BY created_us",
            states,
        )
    ]


def load_batches(conn: sqlite3.Connection, load_id: str) -> list[Batch]:
    return [
        Batch(*r)
        for r in conn.execute(
            f"SELECT {_BATCH_COLS} FROM batches WHERE load_id = ? ORDER BY seq_lo, part_lo", (load_id,)
        )
    ]


def jobs_last_day(conn: sqlite3.Connection, stream: str) -> int:
    since = now_us() - 86_400 * 1_000_000
    return conn.execute("SELECT count(*) FROM jobs WHERE stream = ? AND submitted_us > ?", (stream, since)).fetchone()[
        0
    ]


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


def mark_staged(conn: sqlite3.Connection, b: Batch, size: int, digest: str, fence: Fence | None = None) -> str | None:
    """Record the staged file; returns the batch's object name, or None if it was not ``sealed`` any more."""
    name = content_name(b.object_name, b.batch_id, digest)
    with transaction(conn):
        check_fence(conn, fence)
        ok = _set_state(
            conn, b.batch_id, ("sealed",), "state = 'staged', object_size = ?, object_name = ?", (size, name)
        )
    return name if ok else None


def mark_uploaded(conn: sqlite3.Connection, batch_id: str, checksum: str, fence: Fence | None = None) -> bool:
    """The object is in the store, verified; ``checksum`` is the store's (crc32c for GCS)."""
    with transaction(conn):
        check_fence(conn, fence)
        return _set_state(conn, batch_id, ("staged",), "state = 'uploaded', object_crc32c = ?", (checksum,))


def group(conn: sqlite3.Connection, stream: str, members: list[Batch], fence: Fence | None = None) -> Load:
    """Record a load group durably, before its job is ever submitted.

    The load id derives from the members' object names, which carry their
    content's digest: a job id never covers other bytes than these.
    """
    load_id = hashlib.sha256("\n".join(sorted(b.object_name for b in members)).encode()).hexdigest()[:32]
    now = now_us()
    with transaction(conn):
        check_fence(conn, fence)
        old = conn.execute("SELECT attempt, state FROM loads WHERE load_id = ?", (load_id,)).fetchone()
        if old is None:
            conn.execute(
                "INSERT INTO loads VALUES (?, ?, 0, ?, 'pending', NULL, ?, ?)",
                (load_id, stream, job_id_for(stream, load_id, 0), now, now),
            )
        elif old[1] == "failed":
            # The same objects again (a quarantined batch retried): the old
            # job id belongs to the failed job, so take the next attempt.
            conn.execute(
                "UPDATE loads SET state = 'pending', attempt = ?, job_id = ?, updated_us = ? WHERE load_id = ?",
                (old[0] + 1, job_id_for(stream, load_id, old[0] + 1), now, load_id),
            )
        conn.executemany(
            "UPDATE batches SET load_id = ?, updated_us = ? WHERE batch_id = ? AND state = 'uploaded'",
            [(load_id, now, b.batch_id) for b in members],
        )
    row = conn.execute(
        "SELECT load_id, stream, attempt, job_id, state, error FROM loads WHERE load_id = ?", (load_id,)
    ).fetchone()
    return Load(*row)


def record_submission(conn: sqlite3.Connection, load: Load, fence: Fence | None = None) -> None:
    with transaction(conn):
        check_fence(conn, fence)
        conn.execute(
            "INSERT INTO jobs VALUES (?, ?, ?) ON CONFLICT(job_id) DO NOTHING", (load.job_id, load.stream, now_us())
        )


def next_attempt(conn: sqlite3.Connection, load: Load, error: str, fence: Fence | None = None) -> Load:
    """A job that failed transiently wrote nothing: retry under a new job id."""
    attempt = load.attempt + 1
    job_id = job_id_for(load.stream, load.load_id, attempt)
    with transaction(conn):
        check_fence(conn, fence)
        conn.execute(
            "UPDATE loads SET attempt = ?, job_id = ?, error = ?, updated_us = ? WHERE load_id = ? "
            "AND attempt = ? AND state = 'pending'",
            (attempt, job_id, error, now_us(), load.load_id, load.attempt),
        )
    return Load(load.load_id, load.stream, attempt, job_id, load.state, error)


def delete_rows(conn: sqlite3.Connection, b: Batch) -> int:
    """Delete a whole batch's rows with their pending bytes (in the caller's
    transaction); returns how many events they held."""
    return rows.delete_range(conn, b.stream, b.seq_lo, b.seq_hi)


def event_lines(conn: sqlite3.Connection, b: Batch) -> list[str]:
    """The stored lines of a part's events (or of a whole batch), in order."""
    first, last = (0, b.rows) if b.part_lo is None else (b.part_lo, b.part_hi or 0)
    return rows.lines(conn, b.stream, b.seq_lo, b.seq_hi, first, last)


def ack(conn: sqlite3.Connection, load: Load, fault=None, fence: Fence | None = None) -> int:
    """The load is DONE without error: delete its rows and mark its batches
    loaded, in one transaction. Returns the number of events loaded.

    Only batches still ``uploaded`` in this load are acked; a part marks
    itself loaded and its root's rows go once every part is done (see
    :func:`.bisect.settle`).
    """
    from .bisect import settle

    acked = 0
    with transaction(conn):
        check_fence(conn, fence)
        for b in load_batches(conn, load.load_id):
            if b.state != "uploaded":
                continue
            if b.parent is None:
                deleted = delete_rows(conn, b)
                if fault:
                    fault("mid_ack")
            else:
                deleted = b.rows
            _set_state(conn, b.batch_id, ("uploaded",), "state = 'loaded', error = NULL", ())
            if b.parent is not None:
                settle(conn, b.parent)
            acked += deleted
        conn.execute("UPDATE loads SET state = 'done', updated_us = ? WHERE load_id = ?", (now_us(), load.load_id))
        conn.execute(
            "DELETE FROM batches WHERE state IN ('loaded', 'dead', 'dropped') AND updated_us < ?",
            (now_us() - LOADED_RETENTION_US,),
        )
        conn.execute(
            "DELETE FROM loads WHERE state IN ('done', 'failed') AND updated_us < ?", (now_us() - LOADED_RETENTION_US,)
        )
    return acked


def quarantine(conn: sqlite3.Connection, batch_id: str, error: str, fence: Fence | None = None) -> bool:
    """Hold a live batch out of loading, with the reason, until retried or
    dropped; whether it was live (a loaded batch is never quarantined)."""
    with transaction(conn):
        check_fence(conn, fence)
        return _set_state(
            conn, batch_id, LIVE_STATES, "held_from = state, state = 'quarantined', error = ?, load_id = NULL", (error,)
        )
