"""The loader's durable state in the buffer file: lease, batches, loads, jobs.

Every function here is one transaction, so every step of the drain is
recorded before the next begins and is safe to repeat after a crash.

Batch states: ``sealed`` (range fixed) -> ``staged`` (Parquet written
locally, size and crc32c recorded) -> ``uploaded`` (object in GCS) ->
``loaded`` (rows deleted from ``events``), or ``quarantined`` (a load job
rejected its data; kept with the error until retried or dropped). A batch
in a load group has ``load_id`` set; a load's job id is derived from its
``load_id`` and ``attempt``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass

from bqspool.buffer.store import now_us, transaction
from bqspool.buffer.writer import ADD_USED, INSERT_DEAD, dead_row_bytes
from bqspool.schemas.display import safe_text
from bqspool.schemas.coerce import EVENT_ID
from bqspool.schemas.errors import LeaseHeldError

LOADED_RETENTION_US = 7 * 86_400 * 1_000_000  # loaded batch rows kept this long for `status`


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


_BATCH_COLS = "batch_id, stream, seq_lo, seq_hi, rows, nbytes, day, state, object_name, object_size, object_crc32c, load_id, solo, error"


@dataclass(frozen=True)
class Load:
    load_id: str
    stream: str
    attempt: int
    job_id: str
    state: str
    error: str | None


def job_id_for(stream: str, load_id: str, attempt: int) -> str:
    # Letters, digits, _ and - only, well under 1,024 characters.
    return f"bqspool_{stream}_{load_id}_{attempt}"


# -- lease --------------------------------------------------------------------

def acquire_lease(conn: sqlite3.Connection, holder: str, ttl_s: float) -> None:
    """Take or renew the drain lease; LeaseHeldError if a live loader has it."""
    now = now_us()
    with transaction(conn):
        row = conn.execute("SELECT holder, expires_us FROM lease WHERE name = 'drain'").fetchone()
        if row and row[0] != holder and row[1] > now and not _holder_is_dead(row[0]):
            raise LeaseHeldError(
                f"another loader ({row[0]}) is draining this buffer; its lease expires in "
                f"{(row[1] - now) / 1e6:.0f}s"
            )
        conn.execute(
            "INSERT INTO lease VALUES ('drain', ?, ?) ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, "
            "expires_us = excluded.expires_us",
            (holder, now + int(ttl_s * 1e6)),
        )


def _holder_is_dead(holder: str) -> bool:
    """True when the holder ran on this host and its process is gone.

    A loader killed on this machine need not block the next one for the
    whole lease; one on another host (or a reused pid) still waits it out.
    """
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def release_lease(conn: sqlite3.Connection, holder: str) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM lease WHERE name = 'drain' AND holder = ?", (holder,))


def new_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# -- sealing ------------------------------------------------------------------

def seal(conn: sqlite3.Connection, stream: str, buffer_id: str, prefix: str, max_rows: int, max_bytes: int) -> int:
    """Seal every unsealed row of ``stream`` into batches; returns how many batches.

    Unsealed rows are those above the highest sealed seq of the stream:
    appenders commit under the same write lock, so no row can later appear
    below a range sealed here.
    """
    made = 0
    day = time.strftime("%Y-%m-%d", time.gmtime())
    with transaction(conn):
        top = conn.execute("SELECT coalesce(max(seq_hi), 0) FROM batches WHERE stream = ?", (stream,)).fetchone()[0]
        lo = None
        rows = nbytes = 0
        last = top
        now = now_us()
        pending: list[tuple] = []

        def close(hi: int) -> None:
            nonlocal made
            batch_id = f"{stream}-{buffer_id[:16]}-{lo:012d}-{hi:012d}"
            name = f"{prefix.strip('/')}/{stream}/{day}/{batch_id}.parquet"
            pending.append((batch_id, stream, lo, hi, rows, nbytes, day, "sealed", name, now, now))
            made += 1

        # A stored row (up to 1,000 events) is never split, so a batch can
        # go past max_rows/max_bytes by less than one row.
        for seq, n, size in conn.execute(
            "SELECT seq, n, nbytes FROM events WHERE stream = ? AND seq > ? ORDER BY seq", (stream, top)
        ):
            if lo is not None and (rows + n > max_rows or nbytes + size > max_bytes):
                close(last)
                lo = None
            if lo is None:
                lo, rows, nbytes = seq, 0, 0
            rows += n
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
    return [Batch(*r) for r in conn.execute(sql + " ORDER BY stream, seq_lo", params)]


def loads(conn: sqlite3.Connection, states: tuple[str, ...] = ("pending",)) -> list[Load]:
    marks = ",".join("?" * len(states))
    return [Load(*r) for r in conn.execute(
        f"SELECT load_id, stream, attempt, job_id, state, error FROM loads WHERE state IN ({marks}) "
        "ORDER BY created_us", states)]


def load_batches(conn: sqlite3.Connection, load_id: str) -> list[Batch]:
    return [Batch(*r) for r in conn.execute(
        f"SELECT {_BATCH_COLS} FROM batches WHERE load_id = ? ORDER BY seq_lo", (load_id,))]


def jobs_last_day(conn: sqlite3.Connection, stream: str) -> int:
    since = now_us() - 86_400 * 1_000_000
    return conn.execute("SELECT count(*) FROM jobs WHERE stream = ? AND submitted_us > ?", (stream, since)).fetchone()[0]


# -- transitions --------------------------------------------------------------

def mark_staged(conn: sqlite3.Connection, batch_id: str, size: int, crc32c: str) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE batches SET state = 'staged', object_size = ?, object_crc32c = ?, updated_us = ? "
            "WHERE batch_id = ? AND state = 'sealed'",
            (size, crc32c, now_us(), batch_id),
        )


def mark_uploaded(conn: sqlite3.Connection, batch_id: str) -> None:
    with transaction(conn):
        conn.execute("UPDATE batches SET state = 'uploaded', updated_us = ? WHERE batch_id = ? AND state = 'staged'",
                     (now_us(), batch_id))


def group(conn: sqlite3.Connection, stream: str, batch_ids: list[str]) -> Load:
    """Record a load group durably, before its job is ever submitted."""
    load_id = hashlib.sha256("\n".join(sorted(batch_ids)).encode()).hexdigest()[:32]
    now = now_us()
    with transaction(conn):
        old = conn.execute("SELECT attempt, state FROM loads WHERE load_id = ?", (load_id,)).fetchone()
        if old is None:
            conn.execute("INSERT INTO loads VALUES (?, ?, 0, ?, 'pending', NULL, ?, ?)",
                         (load_id, stream, job_id_for(stream, load_id, 0), now, now))
        elif old[1] == "failed":
            # The same batches again (a quarantined batch retried): the old
            # job id belongs to the failed job, so take the next attempt.
            conn.execute("UPDATE loads SET state = 'pending', attempt = ?, job_id = ?, updated_us = ? WHERE load_id = ?",
                         (old[0] + 1, job_id_for(stream, load_id, old[0] + 1), now, load_id))
        conn.executemany("UPDATE batches SET load_id = ?, updated_us = ? WHERE batch_id = ? AND state = 'uploaded'",
                         [(load_id, now, b) for b in batch_ids])
    row = conn.execute("SELECT load_id, stream, attempt, job_id, state, error FROM loads WHERE load_id = ?",
                       (load_id,)).fetchone()
    return Load(*row)


def record_submission(conn: sqlite3.Connection, load: Load) -> None:
    with transaction(conn):
        conn.execute("INSERT INTO jobs VALUES (?, ?, ?) ON CONFLICT(job_id) DO NOTHING",
                     (load.job_id, load.stream, now_us()))


def next_attempt(conn: sqlite3.Connection, load: Load, error: str) -> Load:
    """A job that failed transiently wrote nothing: retry under a new job id."""
    attempt = load.attempt + 1
    job_id = job_id_for(load.stream, load.load_id, attempt)
    with transaction(conn):
        conn.execute("UPDATE loads SET attempt = ?, job_id = ?, error = ?, updated_us = ? WHERE load_id = ?",
                     (attempt, job_id, error, now_us(), load.load_id))
    return Load(load.load_id, load.stream, attempt, job_id, load.state, error)


def ack(conn: sqlite3.Connection, load: Load, fault=None) -> int:
    """The load is DONE without error: delete its rows and mark its batches
    loaded, in one transaction. Returns the number of events acked."""
    acked = 0
    with transaction(conn):
        for b in load_batches(conn, load.load_id):
            if b.state != "uploaded":
                continue
            where = (b.stream, b.seq_lo, b.seq_hi)
            deleted = conn.execute("SELECT coalesce(sum(n), 0) FROM events WHERE stream = ? AND seq BETWEEN ? AND ?",
                                   where).fetchone()[0]
            conn.execute("DELETE FROM events WHERE stream = ? AND seq BETWEEN ? AND ?", where)
            if fault:
                fault("mid_ack")
            conn.execute("UPDATE counters SET value = value - ? WHERE name = 'pending_bytes'", (b.nbytes,))
            conn.execute("UPDATE batches SET state = 'loaded', error = NULL, updated_us = ? WHERE batch_id = ?",
                         (now_us(), b.batch_id))
            acked += deleted
        conn.execute("UPDATE loads SET state = 'done', updated_us = ? WHERE load_id = ?", (now_us(), load.load_id))
        conn.execute("DELETE FROM batches WHERE state = 'loaded' AND updated_us < ?", (now_us() - LOADED_RETENTION_US,))
        conn.execute("DELETE FROM loads WHERE state IN ('done', 'failed') AND updated_us < ?",
                     (now_us() - LOADED_RETENTION_US,))
    return acked


def quarantine(conn: sqlite3.Connection, batch_id: str, error: str) -> None:
    """Hold a batch out of loading, with the reason, until retried or dropped."""
    with transaction(conn):
        conn.execute("UPDATE batches SET state = 'quarantined', error = ?, load_id = NULL, updated_us = ? "
                     "WHERE batch_id = ?", (error, now_us(), batch_id))


def fail_load(conn: sqlite3.Connection, load: Load, error: str) -> list[Batch]:
    """A job rejected the data. A single batch is quarantined; a group is
    split so each batch gets a job of its own and only the bad one is held.
    Returns the batches quarantined."""
    members = load_batches(conn, load.load_id)
    now = now_us()
    with transaction(conn):
        conn.execute("UPDATE loads SET state = 'failed', error = ?, updated_us = ? WHERE load_id = ?",
                     (error, now, load.load_id))
        if len(members) == 1:
            conn.execute("UPDATE batches SET state = 'quarantined', error = ?, load_id = NULL, updated_us = ? "
                         "WHERE batch_id = ?", (error, now, members[0].batch_id))
            return members
        conn.execute("UPDATE batches SET load_id = NULL, solo = 1, updated_us = ? WHERE load_id = ?", (now, load.load_id))
    return []


def retry_quarantined(conn: sqlite3.Connection, batch_ids: list[str] | None = None) -> int:
    """Put quarantined batches back in line (as solo loads); returns how many."""
    with transaction(conn):
        sql = "UPDATE batches SET state = 'uploaded', solo = 1, error = NULL, load_id = NULL, updated_us = ? " \
              "WHERE state = 'quarantined'"
        params: list = [now_us()]
        if batch_ids:
            sql += f" AND batch_id IN ({','.join('?' * len(batch_ids))})"
            params += batch_ids
        return conn.execute(sql, params).rowcount


def _event_id_of(line: str) -> str | None:
    try:
        return json.loads(line).get(EVENT_ID)
    except (ValueError, AttributeError):
        return None


def drop_quarantined(conn: sqlite3.Connection, batch_ids: list[str]) -> int:
    """Give up on quarantined batches: their events are moved to dead letters."""
    dropped = 0
    with transaction(conn):
        for bid in batch_ids:
            row = conn.execute(f"SELECT {_BATCH_COLS} FROM batches WHERE batch_id = ? AND state = 'quarantined'",
                               (bid,)).fetchone()
            if row is None:
                continue
            b = Batch(*row)
            reason = safe_text(f"dropped from quarantined batch {b.batch_id}: {b.error}")
            now = now_us()
            dead_bytes = 0
            for (payload,) in conn.execute("SELECT payload FROM events WHERE stream = ? AND seq BETWEEN ? AND ?",
                                           (b.stream, b.seq_lo, b.seq_hi)).fetchall():
                rows = [(b.stream, _event_id_of(line), line, reason, now) for line in payload.split("\n")]
                conn.executemany(INSERT_DEAD, rows)
                dead_bytes += sum(dead_row_bytes(r) for r in rows)
            conn.execute("DELETE FROM events WHERE stream = ? AND seq BETWEEN ? AND ?", (b.stream, b.seq_lo, b.seq_hi))
            conn.execute(ADD_USED, (-b.nbytes, dead_bytes)).fetchall()
            conn.execute("UPDATE batches SET state = 'dropped', updated_us = ? WHERE batch_id = ?", (now_us(), bid))
            dropped += 1
    return dropped
