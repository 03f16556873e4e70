"""Many threads and several processes appending to one file at once."""

import multiprocessing
import sqlite3
import threading

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
                mine = [b.append(S, interaction(interaction_id=f"t{k}-{i}"), wait=(i % 4 != 0)) for i in range(PER_THREAD)]
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
