#!/usr/bin/env python3
"""Soak: kill -9 and stall the loader at random moments while producers append.

Starts its own local stack, appends from producer threads, and runs
`bqspool drain --once` over and over. Each run is either killed with
SIGKILL at a random moment, or stalled: stopped with SIGSTOP for longer than
its lease, while another drain takes the lease over and runs (and is itself
killed at random), then resumed with SIGCONT, when it must notice the lost
lease and stop without changing anything. After KILLS kills and STALLS
stalls it drains once more and checks by `_event_id` that BigQuery holds
every appended event exactly once, and that nothing was quarantined. The
test suite runs a short version of the kills (20) and one stall.

    python scripts/soak_loader.py [--kills 200] [--stalls 20] [--lease 2] [--rate 150] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bqspool.buffer import Buffer
from bqspool.loader.backends import localstack
from bqspool.loader.backends.google_clients import bigquery_client
from bqspool.loader.config import load_config

STREAMS = ("user_interactions", "tasks")


def event(stream: str, rng: random.Random) -> dict:
    if stream == "tasks":
        return {
            "user_id": f"u{rng.randrange(50)}",
            "task_id": f"t{rng.randrange(10**9)}",
            "created_at": time.time(),
            "duration_minutes": rng.randrange(120),
            "completed": rng.random() < 0.5,
        }
    return {
        "user_id": f"u{rng.randrange(50)}",
        "interaction_id": f"i{rng.randrange(10**9)}",
        "timestamp": time.time(),
        "message_in": "hello",
        "intent": "chat",
        "tokens_in": rng.randrange(500),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--stalls", type=int, default=20)
    ap.add_argument("--lease", type=float, default=2.0, help="lease seconds: a stall lasts longer than this")
    ap.add_argument(
        "--rate",
        type=float,
        default=150.0,
        help="events/s each of the two producers appends (the final drain loads the whole backlog)",
    )
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        state = localstack.up(d / "stack")
        try:
            os.environ.update(state.env())  # the clients below find the emulators here
            env = dict(os.environ)
            env.update(
                BQSPOOL_BUFFER=str(d / "buffer.db"),
                BQSPOOL_SCHEMAS="eixa",
                BQSPOOL_DATASET="soak",
                BQSPOOL_BATCH_ROWS="50",
                BQSPOOL_BATCH_PER_JOB="25",
                BQSPOOL_RETRY_DEADLINE="5",
                BQSPOOL_LEASE_SECONDS=str(args.lease),
            )
            bqspool = str(Path(sys.executable).with_name("bqspool"))
            subprocess.run([bqspool, "setup"], env=env, check=True, capture_output=True)
            appended = {s: [] for s in STREAMS}
            stop = threading.Event()

            def producer(k: int) -> None:
                prng = random.Random(k)
                with Buffer(env["BQSPOOL_BUFFER"], "eixa", strict=True, durability="normal") as buf:
                    while not stop.is_set():
                        s = STREAMS[prng.randrange(2)]
                        n = prng.randrange(1, 20)
                        appended[s] += buf.append_many(s, [event(s, prng) for _ in range(n)])
                        time.sleep(n / args.rate)

            threads = [threading.Thread(target=producer, args=(k,)) for k in range(2)]
            for t in threads:
                t.start()
            kills = stalls = lost_lease = 0
            codes: Counter = Counter()

            def drain() -> subprocess.Popen:
                return subprocess.Popen(
                    [bqspool, "drain", "--once"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )

            def kill_at_random(proc: subprocess.Popen) -> None:
                nonlocal kills
                time.sleep(rng.uniform(0.3, 1.5))
                if proc.poll() is None:
                    proc.kill()
                    kills += 1
                    if kills % 10 == 0:
                        print(
                            f"{kills} kills, {stalls} stalls, {sum(len(v) for v in appended.values())} events appended",
                            flush=True,
                        )
                codes[proc.wait()] += 1

            def holds_lease(proc: subprocess.Popen, timeout: float = 20.0) -> bool:
                """Wait until ``proc`` holds the drain lease (or has exited)."""
                deadline = time.monotonic() + timeout
                while proc.poll() is None and time.monotonic() < deadline:
                    try:
                        conn = sqlite3.connect(env["BQSPOOL_BUFFER"], timeout=5)
                        row = conn.execute("SELECT holder FROM lease WHERE name = 'drain'").fetchone()
                        conn.close()
                    except sqlite3.Error:
                        row = None
                    if row and f":{proc.pid}:" in row[0]:
                        return True
                    time.sleep(0.02)
                return False

            while kills < args.kills or stalls < args.stalls:
                proc = drain()
                want_stall = stalls < args.stalls and (kills >= args.kills or rng.random() < 0.15)
                if not want_stall:
                    kill_at_random(proc)
                    continue
                if not holds_lease(proc):
                    codes[proc.wait()] += 1
                    continue
                time.sleep(rng.uniform(0.0, 0.5))  # somewhere in the middle of its work
                proc.send_signal(signal.SIGSTOP)  # a VM pause, a slow upload: past the lease
                time.sleep(args.lease + 0.5)
                other = drain()  # another loader takes the lease over meanwhile ...
                if holds_lease(other):
                    time.sleep(rng.uniform(0.0, 1.0))  # ... and is killed at a random moment, or finishes
                if other.poll() is None:
                    other.kill()
                    kills += 1
                codes[other.wait()] += 1
                proc.send_signal(signal.SIGCONT)
                code = proc.wait()
                codes[code] += 1
                stalls += 1
                lost_lease += code == 4
            stop.set()
            for t in threads:
                t.join()
            subprocess.run([bqspool, "drain", "--once"], env=env, check=True)
            print(
                f"{kills} kills, {stalls} stalls ({lost_lease} stalled loaders found their lease taken and "
                f"stopped); exit codes of the interrupted runs: {dict(sorted(codes.items()))}"
            )
            cfg = load_config(env=env)
            client = bigquery_client(cfg)
            ok = True
            for s in STREAMS:
                got = Counter(r[0] for r in client.query(f"SELECT _event_id FROM `{cfg.project}.soak.{s}`").result())
                missing = set(appended[s]) - set(got)
                doubled = [k for k, n in got.items() if n > 1]
                print(
                    f"{s}: appended {len(appended[s])}, in BigQuery {sum(got.values())}, "
                    f"missing {len(missing)}, doubled {len(doubled)}"
                )
                ok &= not missing and not doubled and len(got) == len(appended[s])
            conn = sqlite3.connect(env["BQSPOOL_BUFFER"])
            held = conn.execute("SELECT count(*) FROM batches WHERE state = 'quarantined'").fetchone()[0]
            pending = conn.execute("SELECT value FROM counters WHERE name = 'pending_bytes'").fetchone()[0]
            conn.close()
            print(f"quarantined batches: {held}, pending bytes left: {pending}")
            ok &= held == 0 and pending == 0
        finally:
            localstack.down(d / "stack")
    print(f"exactly once after {args.kills} kills and {args.stalls} stalls" if ok else "FAILED: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
