"""The buffer file and the writer's contract, on real SQLite files."""

import asyncio
import json
import logging
import multiprocessing
import os
import sqlite3
import stat
import threading
import time
import uuid

import pytest
from bqspool.buffer import (
    Buffer,
    BufferClosedError,
    BufferFormatError,
    BufferFullError,
    ConfigError,
    DiskFullError,
    PermanentError,
    RetryableError,
    store,
    uuid7,
)
from bqspool.buffer.ids import uuid7_many, uuid7_millis

from .conftest import interaction
from .stored import pending_events, stored_lines

S = "user_interactions"


def pending_in_file(path):
    conn = sqlite3.connect(path)
    try:
        return pending_events(conn)
    finally:
        conn.close()


def test_uuid7_ordered_unique_and_versioned():
    ids = [uuid7() for _ in range(20_000)] + uuid7_many(20_000)
    few = [i for k in range(1, 10) for i in uuid7_many(k)]  # below 8 ids, one at a time
    ids += few + [uuid7() for _ in range(10)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for i in ids[:3] + ids[20_000:40_000:97] + few + ids[-3:]:  # the bulk ones span several milliseconds
        parsed = uuid.UUID(i)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == i
    assert len({uuid7_millis(i) for i in ids[20_000:40_000]}) >= 5  # at most 4,096 a millisecond
    assert abs(uuid7_millis(ids[-1]) / 1000 - time.time()) < 5


def test_a_lone_event_packs_as_it_would_among_others():
    from bqspool.buffer.pack import pack_events
    from bqspool.schemas import load_schema_set
    from bqspool.schemas.coerce import Coercer
    from bqspool.schemas.errors import ValidationError

    coercer = Coercer(load_schema_set("eixa")[S])
    good, other = interaction(interaction_id="a"), interaction(interaction_id="b")
    (alone,), bad = pack_events(coercer, [good], ["ID1"])
    (pair,), _ = pack_events(coercer, [good, other], ["ID1", "ID2"])
    assert bad == [] and (alone.n, list(alone.members)) == (1, [0])
    assert alone.payload == pair.payload.split("\n")[0] and alone.nbytes == len(alone.payload.encode())
    for broken in ({**good, "timestamp": "not a time"}, {**good, "user_id": None}, "not an object"):
        chunks, bad = pack_events(coercer, [broken], ["ID3"])
        assert chunks == [] and [pos for pos, _ in bad] == [0] and isinstance(bad[0][1], ValidationError)


def test_append_stores_once_and_stats(buf, buffer_path):
    ids = [buf.append(S, interaction(interaction_id=str(i))) for i in range(5)]
    ids += buf.append_many(S, [interaction(interaction_id=f"m{i}") for i in range(5)])
    assert len(set(ids)) == 10 and ids == sorted(ids)
    stats = buf.stats()
    s = stats["streams"][S]
    assert s["pending"] == 10 and s["bytes"] > 10 * 100 and 0 <= s["oldest_age_s"] < 60
    assert stats["streams"]["tasks"] == {"pending": 0, "bytes": 0, "oldest_age_s": None}
    assert stats["pending_bytes"] == s["bytes"] and stats["file_bytes"] > 0
    assert stats["process"]["appended"] == 10
    assert pending_in_file(buffer_path) == 10
    assert [e["interaction_id"] for e in buf.peek(S, 3)] == ["0", "1", "2"]


def test_append_many_packs_events_into_few_rows_in_order(buffer_path):
    with Buffer(buffer_path, "eixa", durability="normal") as b:
        ids = b.append_many(S, [interaction(interaction_id=str(i)) for i in range(2500)])
        assert [e["interaction_id"] for e in b.peek(S, 1005)] == [str(i) for i in range(1005)]
        assert b.stats()["streams"][S]["pending"] == 2500
    conn = sqlite3.connect(buffer_path)
    assert conn.execute("SELECT n FROM events ORDER BY seq").fetchall() == [(1000,), (1000,), (500,)]
    lines = stored_lines(conn)
    assert [json.loads(line)["_event_id"] for line in lines] == ids
    assert [json.loads(line)["interaction_id"] for line in lines] == [str(i) for i in range(2500)]
    assert conn.execute("SELECT sum(nbytes) FROM events").fetchone()[0] == sum(len(x.encode()) for x in lines) + 2497


def test_append_many_rows_stay_under_a_mebibyte(buffer_path):
    with Buffer(buffer_path, "eixa", durability="normal") as b:
        b.append_many(S, [interaction(message_in="é" * 150_000) for _ in range(9)])  # ~300 kB each
    rows = (
        sqlite3.connect(buffer_path).execute("SELECT n, nbytes, length(CAST(payload AS BLOB)) FROM events").fetchall()
    )
    assert [r[0] for r in rows] == [3, 3, 3]
    assert all(nbytes == blob <= 1024 * 1024 for _, nbytes, blob in rows)


def test_free_pages_go_back_in_steps_without_writing_them_to_the_wal(buffer_path):
    with Buffer(buffer_path, "eixa", durability="normal") as b:
        b.append_many(S, [interaction(message_in="x" * 100_000) for _ in range(120)])  # ~12 MB
    conn = store.connect(buffer_path)
    conn.execute("PRAGMA secure_delete = FAST")  # as the loader's ack runs
    conn.execute("DELETE FROM events WHERE seq < (SELECT max(seq) FROM events)")  # a row of ~1 MB stays
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    free, pages = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("freelist_count", "page_count"))
    assert free > 2500 and pages - free > 64  # more live pages than a step: walked, not rebuilt
    wal = buffer_path.with_name(buffer_path.name + "-wal")

    assert store.release_free_pages(conn, step_pages=64) == free
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert conn.execute("PRAGMA page_count").fetchone()[0] <= pages - free  # pointer-map pages go too
    # One transaction over the whole free list would spill the freed pages
    # into the WAL (about 11 MB here); steps write only the bookkeeping and
    # the live row's pages they move down (about 1 MB).
    assert wal.stat().st_size < free * 4096 // 4, wal.stat().st_size
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    assert buffer_path.stat().st_size < 2 * 1024 * 1024
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    conn.close()


def test_an_emptied_file_is_rebuilt_and_keeps_its_modes_and_sequence(buffer_path):
    with Buffer(buffer_path, "eixa", durability="normal") as b:
        b.append_many(S, [interaction(message_in="x" * 100_000) for _ in range(120)])  # ~12 MB
    conn = store.connect(buffer_path)
    conn.execute("PRAGMA secure_delete = FAST")
    last = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    conn.execute("DELETE FROM events")
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    reader = sqlite3.connect(buffer_path)  # another connection, as an appender's
    assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 0

    assert store.release_free_pages(conn) == free
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    assert buffer_path.stat().st_size < 256 * 1024
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # still incremental
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA temp_store").fetchone()[0] == 0  # put back
    conn.close()
    with Buffer(buffer_path, "eixa", durability="normal") as b:
        b.append(S, interaction())
    assert reader.execute("SELECT seq FROM events").fetchall() == [(last + 1,)]  # seq is never reused
    reader.close()


def test_a_file_that_cannot_be_rebuilt_has_its_free_list_walked(buffer_path):
    with Buffer(buffer_path, "eixa", durability="normal") as b:
        b.append_many(S, [interaction(message_in="x" * 100_000) for _ in range(40)])
    conn = store.connect(buffer_path)
    conn.execute("DELETE FROM events")
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    busy = conn.execute("SELECT key FROM meta")  # a statement in progress: VACUUM refuses to run
    busy.fetchone()
    assert store.release_free_pages(conn, step_pages=256) == free
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    busy.close()
    conn.close()


def test_append_many_dead_letters_bad_and_oversize_events_and_keeps_the_rest(buffer_path):
    # Bad events in the first and last slices of 1,000; the middle slice is
    # all canonical and takes the list fast path.
    events = [interaction(interaction_id=str(i)) for i in range(2500)]
    events[3] = interaction(duration_ms="slow")
    events[2200] = interaction(message_in="z" * 5000)  # over max_row_bytes below
    events[2499] = "not an object"
    bad = (3, 2200, 2499)
    with Buffer(buffer_path, "eixa", durability="normal", max_row_bytes=4000) as b:
        ids = b.append_many(S, events)
        dead = {d["event_id"]: d["reason"] for d in b.dead_letters()}
    assert None not in ids and len(set(ids)) == 2500
    assert set(dead) == {ids[k] for k in bad}
    assert "duration_ms" in dead[ids[3]] and "4000-byte limit" in dead[ids[2200]] and "dict" in dead[ids[2499]]
    conn = sqlite3.connect(buffer_path)
    stored = [json.loads(line) for line in stored_lines(conn)]
    assert [e["_event_id"] for e in stored] == [i for k, i in enumerate(ids) if k not in bad]
    assert [e["interaction_id"] for e in stored] == [str(k) for k in range(2500) if k not in bad]
    assert conn.execute("SELECT n FROM events ORDER BY seq").fetchall() == [(999,), (1000,), (498,)]


def test_wait_false_commits_within_flush_interval(buffer_path):
    with Buffer(buffer_path, "eixa", durability="normal", flush_interval=0.05) as b:
        t = time.perf_counter()
        for _i in range(200):
            b.append(S, interaction(), wait=False)
        assert time.perf_counter() - t < 1.0
        deadline = time.monotonic() + 5
        while pending_in_file(buffer_path) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pending_in_file(buffer_path) == 200


def test_flush_and_close_commit_unwaited_events(buffer_path):
    b = Buffer(buffer_path, "eixa", flush_interval=30)  # linger far longer than the test
    for _ in range(50):
        b.append(S, interaction(), wait=False)
    b.flush()
    assert pending_in_file(buffer_path) == 50
    for _ in range(25):
        b.append(S, interaction(), wait=False)
    b.close()
    assert pending_in_file(buffer_path) == 75
    with pytest.raises(BufferClosedError):
        b.append(S, interaction())
    b.close()  # idempotent


def test_flush_timeout_while_the_file_is_locked_leaves_nothing_behind(buffer_path):
    # Another connection holds the write lock: the first group's commit waits
    # on it, a second group gathers behind, and a flush with a timeout gives
    # up. Once the lock goes, both groups must still be committed by the
    # background thread although nobody waits for them any more.
    with Buffer(buffer_path, "eixa", flush_interval=0.01, busy_timeout=30) as b:
        b.append(S, interaction())  # creates the file and starts the writer
        other = sqlite3.connect(buffer_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            b.append(S, interaction(), wait=False)
            deadline = time.monotonic() + 5
            while b._writer.writing is None and time.monotonic() < deadline:
                time.sleep(0.005)
            assert b._writer.writing is not None  # the background commit is stuck on the lock
            b.append(S, interaction(), wait=False)
            t = time.monotonic()
            with pytest.raises(TimeoutError):
                b.flush(timeout=0.2)
            assert 0.15 < time.monotonic() - t < 2
        finally:
            other.execute("ROLLBACK")
            other.close()
        deadline = time.monotonic() + 5
        while pending_in_file(buffer_path) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pending_in_file(buffer_path) == 3
        b.flush(timeout=5)


def test_append_async_many_tasks(buffer_path):
    async def main():
        with Buffer(buffer_path, "eixa", durability="normal") as b:
            ids = await asyncio.gather(*(b.append_async(S, interaction(interaction_id=str(i))) for i in range(300)))
            bad = await b.append_async(S, {"user_id": 1.5})
            return ids, bad, b.stats()

    ids, bad, stats = asyncio.run(main())
    assert len(set(ids)) == 300 and bad
    assert stats["streams"][S]["pending"] == 300 and stats["dead_letters"] == 1


def test_file_modes_are_private(buffer_path):
    with Buffer(buffer_path, "eixa") as b:
        b.append(S, interaction())
        for suffix in ("", "-wal", "-shm"):
            p = buffer_path.with_name(buffer_path.name + suffix)
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, suffix


def test_format_version_and_foreign_files(tmp_path):
    p = tmp_path / "b.db"
    Buffer(p, "eixa").close()
    conn = sqlite3.connect(p)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store.FORMAT_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(BufferFormatError, match="format 99.*upgrade bqspool"):
        Buffer(p, "eixa")
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(BufferFormatError, match="something else"):
        Buffer(other, "eixa")
    assert other.exists()  # never moved aside: it is someone's data


def test_garbage_file_is_moved_aside_loudly(tmp_path, caplog):
    p = tmp_path / "b.db"
    p.write_bytes(b"this is not a database at all" * 100)
    with caplog.at_level(logging.ERROR, "bqspool.buffer"):
        with Buffer(p, "eixa") as b:
            b.append(S, interaction())
            stats = b.stats()
    assert stats["recovered_from"] and os.path.exists(stats["recovered_from"])
    assert open(stats["recovered_from"], "rb").read().startswith(b"this is not")
    assert "corrupt" in caplog.text and "moved it aside" in caplog.text
    assert pending_in_file(p) == 1


def test_damaged_pages_are_detected_and_moved_aside(tmp_path):
    p = tmp_path / "b.db"
    with Buffer(p, "eixa", durability="normal") as b:
        # One event a row: many b-tree pages, which is what quick_check reads.
        for _ in range(2000):
            b.append(S, interaction(message_in="x" * 500), wait=False)
    conn = sqlite3.connect(p)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(p.read_bytes())
    page = 4096
    for off in range(page * 3, len(data) - page, page * 7):  # scribble over some pages
        data[off + 100 : off + 400] = os.urandom(300)
    p.write_bytes(bytes(data))
    with Buffer(p, "eixa") as b:
        assert b.recovered_from is not None
        assert b.stats()["pending"] == 0
        b.append(S, interaction())
    assert pending_in_file(p) == 1


def test_cap_raise(buffer_path):
    with Buffer(buffer_path, "eixa", max_bytes=2000, on_full="raise", durability="normal") as b:
        n = 0
        with pytest.raises(BufferFullError) as err:
            while True:
                b.append(S, interaction())
                n += 1
        assert isinstance(err.value, RetryableError)
        assert n > 0 and b.stats()["streams"][S]["pending"] == n
        with pytest.raises(BufferFullError, match="can never fit"):
            b.append_many(S, [interaction()] * 100)


def test_cap_drop_counts_and_logs(buffer_path, caplog):
    with caplog.at_level(logging.WARNING, "bqspool.buffer"):
        with Buffer(buffer_path, "eixa", max_bytes=2000, on_full="drop", durability="normal") as b:
            ids = [b.append(S, interaction()) for _ in range(40)]
            ids += b.append_many(S, [interaction()] * 10)
            b.flush()
            stats = b.stats()
    stored = [i for i in ids if i is not None]
    assert 0 < len(stored) < 50
    assert stats["streams"][S]["pending"] == len(stored)
    assert stats["dropped"] == 50 - len(stored) == stats["process"]["dropped"]
    assert "dropped the newest 1 event(s)" in caplog.text
    with Buffer(buffer_path, "eixa") as again:  # drops are persisted for `bqspool status`
        assert again.stats()["dropped"] == 50 - len(stored)


def make_room(path, rows):
    """What the loader's ack does: delete rows and give their bytes back."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    seqs = conn.execute("SELECT seq, nbytes FROM events ORDER BY seq LIMIT ?", (rows,)).fetchall()
    conn.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s, _ in seqs])
    conn.execute("UPDATE counters SET value = value - ? WHERE name = 'pending_bytes'", (sum(n for _, n in seqs),))
    conn.execute("COMMIT")
    conn.close()


def test_cap_block_waits_for_room_then_times_out(buffer_path):
    with Buffer(buffer_path, "eixa", max_bytes=2000, on_full="block", block_timeout=5, durability="normal") as b:
        b.append(S, interaction())
        size = b.stats()["pending_bytes"]
        while b._room(size):
            b.append(S, interaction())
        full_at = b.stats()["streams"][S]["pending"]
        timer = threading.Timer(0.3, make_room, args=(buffer_path, full_at))
        timer.start()
        t = time.monotonic()
        assert b.append(S, interaction())  # blocks until the "loader" makes room
        waited = time.monotonic() - t
        timer.join()
        assert 0.25 < waited < 4
        assert b.stats()["streams"][S]["pending"] == 1
    with Buffer(buffer_path, "eixa", max_bytes=400, on_full="block", block_timeout=0.3) as b:
        with pytest.raises(BufferFullError, match="stayed full"):
            for _ in range(10):
                b.append(S, interaction())


def test_disk_full_is_clear_and_leaves_buffer_consistent(buffer_path):
    with Buffer(buffer_path, "eixa", durability="normal") as b:
        b.append_many(S, [interaction() for _ in range(10)])
    pages = sqlite3.connect(buffer_path).execute("PRAGMA page_count").fetchone()[0]
    with Buffer(buffer_path, "eixa", pragmas={"max_page_count": pages + 2}) as b:
        with pytest.raises(DiskFullError, match="disk is full") as err:
            for _ in range(100):
                b.append_many(S, [interaction(message_in="y" * 4000) for _ in range(20)])
        assert isinstance(err.value, RetryableError)
        committed = b.stats()["streams"][S]["pending"]
        assert committed >= 10
        assert b.stats()["pending_bytes"] == sum(
            r[0] for r in sqlite3.connect(buffer_path).execute("SELECT nbytes FROM events")
        )
    conn = sqlite3.connect(buffer_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with Buffer(buffer_path, "eixa") as b:  # space is back: appends work again
        b.append(S, interaction())
        assert b.stats()["streams"][S]["pending"] == committed + 1


def test_bad_options_are_config_errors(buffer_path):
    for kw in (
        {"durability": "sometimes"},
        {"on_full": "explode"},
        {"max_bytes": 0},
        {"check": "maybe"},
        {"unknown_fields": "keep"},
    ):
        with pytest.raises(ConfigError):
            Buffer(buffer_path, "eixa", **kw)
    assert issubclass(ConfigError, PermanentError)


def _child_appends(path, n, q):
    b = Buffer(path, "eixa", durability="normal")
    ids = [b.append(S, interaction()) for _ in range(n)]
    b.close()
    q.put(ids)


def test_forked_child_gets_its_own_writer(buffer_path):
    b = Buffer(buffer_path, "eixa", durability="normal")
    b.append(S, interaction())  # parent's writer thread is running
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()

    def child():
        q.put([b.append(S, interaction()) for _ in range(20)])
        b.close()

    p = ctx.Process(target=child)
    p.start()
    child_ids = q.get(timeout=30)
    p.join(30)
    assert p.exitcode == 0
    b.append(S, interaction())
    b.close()
    assert len(set(child_ids)) == 20 and pending_in_file(buffer_path) == 22


def test_old_format_is_migrated_in_place(tmp_path):
    p = tmp_path / "v1.db"
    conn = sqlite3.connect(p, isolation_level=None)
    for sql in store.MIGRATIONS[1]:
        conn.execute(sql)
    conn.execute("INSERT INTO meta VALUES ('buffer_id', 'b1'), ('created_us', '0')")
    conn.execute(
        "INSERT INTO events (stream, event_id, payload, nbytes, created_us) VALUES ('tasks', 'e1', '{}', 2, 0)"
    )
    conn.execute(
        "INSERT INTO events (stream, event_id, payload, nbytes, created_us) VALUES ('tasks', 'e2', '{}', 2, 0)"
    )
    conn.execute("DELETE FROM events WHERE event_id = 'e2'")  # seq 2 is used up: new rows must come after it
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with Buffer(p, "eixa") as b:
        stats = b.stats()
        b.append_many(S, [interaction(), interaction()])
    assert stats["streams"]["tasks"]["pending"] == 1 and stats["buffer_id"] == "b1"
    conn = sqlite3.connect(p)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store.FORMAT_VERSION
    assert conn.execute("SELECT count(*) FROM batches").fetchone()[0] == 0
    assert conn.execute("SELECT seq, n, payload FROM events ORDER BY seq").fetchall()[0] == (1, 1, "{}")
    assert conn.execute("SELECT seq, n FROM events WHERE stream = ?", (S,)).fetchall() == [(3, 2)]


def test_format_2_file_with_every_row_loaded_keeps_its_seq_counter(tmp_path):
    # The loader has sealed (and loaded) seq 1..3; a migrated file must never
    # hand out those seqs again, or new rows would hide below a sealed range.
    p = tmp_path / "v2.db"
    conn = sqlite3.connect(p, isolation_level=None)
    for step in (1, 2):
        for sql in store.MIGRATIONS[step]:
            conn.execute(sql)
    conn.execute("INSERT INTO meta VALUES ('buffer_id', 'b2'), ('created_us', '0')")
    for i in range(3):
        conn.execute(
            "INSERT INTO events (stream, event_id, payload, nbytes, created_us) VALUES (?, ?, '{}', 2, 0)", (S, f"e{i}")
        )
    conn.execute("DELETE FROM events")
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    with Buffer(p, "eixa") as b:
        b.append(S, interaction())
    assert sqlite3.connect(p).execute("SELECT seq FROM events").fetchall() == [(4,)]
