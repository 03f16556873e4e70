"""Many threads and several processes appending to one file at once."""

import multiprocessing
import sqlite3
import threading
import time

from bqspool.buffer import Buffer

from .conftest import interaction
from .stored import stored_ids

S = "user_interactions"
THREADS, PER_THREAD = 8, 300
PROCS, PER_PROC = 4, 300


def _proc(path, k, q):
    try:
        with Buffer(path, "eixa", busy_timeout=60) as b:
            ids = []
            for i in range(PER_PROC):
                if i % 3 == 0:
                    ids += b.append_many(S, [interaction(interaction_id=f"p{k}-{i}-{j}") for j in range(3)])
                else:
                    ids.append(b.append(S, interaction(interaction_id=f"p{k}-{i}"), wait=(i % 2 == 0)))
        q.put(("ok", ids))
    except BaseException as exc:  # report, never hang the parent
        q.put(("error", repr(exc)))


def test_threads_and_processes_on_one_file(buffer_path):
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_proc, args=(buffer_path, k, q)) for k in range(PROCS)]
    errors = []
    thread_ids = []
    lock = threading.Lock()
    with Buffer(buffer_path, "eixa", busy_timeout=60) as b:
        for p in procs:
            p.start()

        def worker(k):
            try:
                mine = [
                    b.append(S, interaction(interaction_id=f"t{k}-{i}"), wait=(i % 4 != 0)) for i in range(PER_THREAD)
                ]
                with lock:
                    thread_ids.extend(mine)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results = [q.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(60)
    assert not errors, errors
    assert all(status == "ok" for status, _ in results), results
    proc_ids = [i for _, ids in results for i in ids]
    expected = THREADS * PER_THREAD + PROCS * (PER_PROC // 3 * 3 + (PER_PROC - PER_PROC // 3))
    all_ids = thread_ids + proc_ids
    assert len(all_ids) == expected and None not in all_ids
    conn = sqlite3.connect(buffer_path)
    stored = stored_ids(conn)
    assert sum(stored.values()) == expected
    assert set(stored) == set(all_ids) and max(stored.values()) == 1
    nbytes = conn.execute("SELECT sum(nbytes) FROM events").fetchone()[0]
    assert conn.execute("SELECT value FROM counters WHERE name = 'pending_bytes'").fetchone()[0] == nbytes


def _spy_commits(writer):
    """Record each commit's row count (the real commit still runs)."""
    sizes = []
    write = writer._write

    def spy(group):
        sizes.append(len(group.rows))
        return write(group)

    writer._write = spy
    return sizes


def _just_woke(writer, waiters):
    # As if a commit with ``waiters`` waiting callers ended right now.
    with writer.cond:
        writer._want, writer._ended = waiters, time.monotonic()


def test_threads_a_commit_woke_share_the_next_one(buffer_path):
    with Buffer(buffer_path, "eixa") as b:
        writer = b._ensure_writer()
        writer.gather_idle_s, writer.gather_max_s = 0.5, 5.0
        sizes = _spy_commits(writer)
        ids = []
        threads = [
            threading.Thread(target=lambda i=i: ids.append(b.append(S, interaction(interaction_id=str(i)))))
            for i in range(3)
        ]
        _just_woke(writer, 3)
        for t in threads:  # arriving 0.1 s apart, inside the 0.5 s window
            t.start()
            time.sleep(0.1)
        for t in threads:
            t.join()
        assert sizes == [3]
        assert sorted(stored_ids(sqlite3.connect(buffer_path))) == sorted(ids)


def test_a_leader_not_just_woken_commits_at_once(buffer_path):
    with Buffer(buffer_path, "eixa") as b:
        writer = b._ensure_writer()
        writer.gather_idle_s, writer.gather_max_s = 0.5, 5.0
        sizes = _spy_commits(writer)
        _just_woke(writer, 8)
        with writer.cond:
            writer._ended -= 10  # that commit was long ago: no loop of appends to wait for
        t = time.monotonic()
        b.append(S, interaction())
        assert time.monotonic() - t < 0.4
        # Just woken, but nobody follows: it waits one idle window, not the maximum.
        _just_woke(writer, 8)
        t = time.monotonic()
        b.append(S, interaction())
        assert 0.4 < time.monotonic() - t < 2.5
        assert sizes == [1, 1]


def test_close_returns_while_a_durable_append_commits_its_own_group(tmp_path):
    """The background thread waits while the current group has a waiter (that caller
    commits it). If close() came meanwhile, the waiter's commit must wake the thread
    to end: it did not, and close() (and the shipper's last ship after it) hung."""
    import threading

    from bqspool.buffer import store
    from bqspool.buffer.writer import Writer

    path = tmp_path / "b.db"
    with Buffer(path, "eixa", durability="normal"):
        pass  # the file and its tables
    w = Writer(
        path, synchronous="NORMAL", busy_timeout_s=5, flush_interval=0.05, pragmas={}, on_commit=lambda g, b: None
    )
    with w.cond:
        w.group.rows.append(("s", '{"x":1}', 1, 7, store.now_us()))
        w.join(w.group)  # a durable caller: it will commit this group itself
        group = w.group
        w.wake()  # the background thread finds a waiter on the group, and waits
    stopping = threading.Thread(target=w.stop)
    stopping.start()  # closing: the thread wakes, still sees the waiter, waits again
    assert w.wait_for(group) and group.error is None  # the waiter commits
    stopping.join(30)
    assert not stopping.is_alive(), "close() hung: the writer's thread was never told the group was committed"
