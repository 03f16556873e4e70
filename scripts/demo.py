#!/usr/bin/env python3
"""The main job, end to end on the local stack: a fleet, with an outage in the middle.

1. start the local stack (fake-gcs-server + BigQuery emulator), run
   `bqspool setup` for the bundled leafloaf tables in a fresh dataset, and
   `bqspool doctor` (it stops the demo if a check fails);
2. start hosts: each a producer process (several threads) appending to its
   own buffer, with its own shipper (`bqspool run --role ship`, as a
   sidecar runs); and one committer for them all (`bqspool run --role
   commit`), each on a short schedule;
3. stop both GCS and BigQuery for a while; the producers keep appending;
4. bring them back; the shippers and the committer catch up;
5. stop the producers, let every buffer ship and the committer load it,
   stop them with SIGTERM, and check through the BigQuery client: per-table
   row counts equal the events appended, no `_event_id` twice; then the
   load jobs each table cost, from the commit log;
6. print `bqspool verify` (schema and exactly-once audit) and two of the
   seed's queries (`bqspool query popular-products`, `user-engagement`),
   and end with `bqspool monitor --once`: nothing firing any more.

Throughout, `bqspool monitor --serve` serves the status page (its address is
printed); `monitor --once` during the outage shows the critical alert.

    python scripts/demo.py [--seconds 24] [--outage 8] [--procs 3] [--threads 2] [--keep-stack]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STREAMS = ("user_search_events", "product_interaction_events", "cart_events", "order_events", "user_events")
WORDS = ["organic", "milk", "bread", "gluten", "free", "apples", "vegan", "cheese", "oat", "eggs"]


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make(stream: str, rng: random.Random) -> dict:
    base = {
        "user_id": f"user-{rng.randrange(500)}",
        "session_id": f"s-{rng.randrange(10**6)}",
        "timestamp": time.time(),
    }
    if stream == "user_search_events":
        return {
            **base,
            "query": " ".join(rng.choices(WORDS, k=3)),
            "result_count": rng.randrange(100),
            "search_latency_ms": rng.randrange(5, 500),
            "filters": {"vegan": rng.random() < 0.3},
        }
    if stream == "product_interaction_events":
        return {
            **base,
            "product_id": f"p-{rng.randrange(2000)}",
            "product_name": rng.choice(WORDS).title(),
            "interaction_type": rng.choice(["view", "click", "add_to_cart"]),
            "price": f"{rng.uniform(1, 30):.2f}",
        }
    if stream == "cart_events":
        return {
            **base,
            "action": rng.choice(["add", "remove"]),
            "product_id": f"p-{rng.randrange(2000)}",
            "quantity": rng.randrange(1, 5),
            "price": f"{rng.uniform(1, 30):.2f}",
        }
    if stream == "order_events":
        products = [
            {
                "product_id": f"p-{rng.randrange(2000)}",
                "quantity": rng.randrange(1, 4),
                "price": f"{rng.uniform(1, 20):.2f}",
            }
            for _ in range(rng.randrange(1, 5))
        ]
        return {
            **base,
            "order_id": f"o-{rng.randrange(10**9)}",
            "currency": "USD",
            "products": products,
            "total_amount": f"{sum(float(p['price']) * p['quantity'] for p in products):.2f}",
            "total_latency_ms": rng.randrange(50, 2000),
        }
    return {
        **base,
        "event_type": rng.choice(["page_view", "login", "share"]),
        "page": "/home",
        "response_time_ms": rng.randrange(10, 900),
        "context": {"ab": rng.choice("AB")},
    }


def producer_process(buffer: str, seconds: float, threads: int, seed: int, out) -> None:
    from bqspool.buffer import Buffer

    counts = {s: 0 for s in STREAMS}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    with Buffer(buffer, "leafloaf", strict=True) as buf:

        def work(k: int) -> None:
            rng = random.Random(seed * 100 + k)
            mine = {s: 0 for s in STREAMS}
            while time.monotonic() < deadline:
                stream = rng.choice(STREAMS)
                if rng.random() < 0.2:
                    batch = [make(stream, rng) for _ in range(rng.randrange(2, 30))]
                    mine[stream] += sum(1 for i in buf.append_many(stream, batch) if i)
                else:
                    buf.append(stream, make(stream, rng), wait=rng.random() < 0.5)
                    mine[stream] += 1
                time.sleep(rng.uniform(0, 0.004))
            with lock:
                for s, n in mine.items():
                    counts[s] += n

        ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    out.put(counts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=24, help="how long producers append")
    ap.add_argument("--outage", type=float, default=8, help="how long GCS and BigQuery are down")
    ap.add_argument("--procs", type=int, default=3, help="hosts: producer processes, each with its buffer and shipper")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", default=str(ROOT / ".bqspool" / "demo"))
    ap.add_argument("--keep-stack", action="store_true", help="leave the local stack running at the end")
    args = ap.parse_args()

    from bqspool.loader import exit_codes
    from bqspool.loader.backends import localstack
    from bqspool.loader.backends.google_clients import bigquery_client
    from bqspool.loader.config import load_config

    run_id = time.strftime("%Y%m%d_%H%M%S")
    folder = Path(args.dir)
    stack_dir = folder / "local"
    say(f"starting the local stack in {stack_dir} ...")
    state = localstack.up(stack_dir)
    os.environ.update(state.env())
    buffers = [folder / run_id / f"host{k}.db" for k in range(args.procs)]
    env = dict(
        os.environ,
        BQSPOOL_SCHEMAS="leafloaf",
        BQSPOOL_DATASET=f"demo_{run_id}",
        BQSPOOL_PREFIX=f"demo/{run_id}",
        BQSPOOL_SCHEDULE="3s",
        # A short demo ships each stream once its oldest event is 3 s old
        # (production: 9 minutes, or a 16-MiB object; docs/deploy.md).
        BQSPOOL_SHIP_MAX_DELAY="3s",
        BQSPOOL_SHIP_CHECK="1s",
        BQSPOOL_RETRY_DEADLINE="2",
        BQSPOOL_RETRY_MAXIMUM="1",
        BQSPOOL_MONITOR_STATE=str(folder / run_id / "monitor.json"),
        BQSPOOL_MONITOR_NO_DATA_MINUTES="0.1",  # a short demo: 6 s without loads while events wait is critical
    )
    bqspool = str(Path(sys.executable).with_name("bqspool"))
    say(f"bqspool setup: leafloaf tables in dataset demo_{run_id}")
    subprocess.run([bqspool, "setup"], env=env, check=True)
    say("bqspool doctor: can this machine ship and commit with this configuration?")
    subprocess.run([bqspool, "doctor", "--buffer", str(buffers[0])], env=env, check=True)

    say(f"starting {args.procs} producer processes x {args.threads} threads for {args.seconds:.0f}s")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    producers = [
        ctx.Process(target=producer_process, args=(str(buffers[k]), args.seconds, args.threads, k, out))
        for k in range(args.procs)
    ]
    for p in producers:
        p.start()
    time.sleep(1)
    say(f"starting {args.procs} shippers (bqspool run --role ship) and one committer (--role commit), every 3s")
    shippers = [
        subprocess.Popen([bqspool, "run", "--role", "ship"], env=dict(env, BQSPOOL_BUFFER=str(b))) for b in buffers
    ]
    committer = subprocess.Popen([bqspool, "-v", "run", "--role", "commit"], env=env)
    page = f"127.0.0.1:{_free_port()}"
    watcher = subprocess.Popen(
        [bqspool, "monitor", "--serve", page, "--every", "3s", "--buffer", str(buffers[0])],
        env=dict(env, BQSPOOL_MONITOR_STATE=str(folder / run_id / "monitor-page.json")),
        stdout=subprocess.DEVNULL,
    )
    say(f"status page: http://{page}/ (alerts, backlog and loads per table; /healthz, /metrics)")
    loaders = [*shippers, committer, watcher]
    ok = False
    try:
        time.sleep(max(1.0, args.seconds / 4))
        say(f"OUTAGE: stopping GCS and BigQuery for {args.outage:.0f}s (producers keep appending)")
        localstack.stop_service("gcs", stack_dir)
        localstack.stop_service("bigquery", stack_dir)
        time.sleep(max(0.0, args.outage - 4))
        say("bqspool monitor --once, during the outage:")
        during = subprocess.run([bqspool, "monitor", "--once", "--buffer", str(buffers[0])], env=env)
        if during.returncode != exit_codes.CRITICAL:
            say("MISMATCH: monitor saw no critical alert during the outage")
        outage_alert_ok = during.returncode == exit_codes.CRITICAL
        time.sleep(1)
        say("outage over: starting GCS and BigQuery again")
        localstack.start_service("gcs", stack_dir)
        localstack.start_service("bigquery", stack_dir)
        counts = {s: 0 for s in STREAMS}
        for _ in producers:
            for s, n in out.get(timeout=args.seconds + 120).items():
                counts[s] += n
        for p in producers:
            p.join()
        say(f"producers done: {sum(counts.values())} events appended")
        cfg = load_config(env=env)
        import sqlite3

        from bqspool.loader.clients import make_object_store

        store = make_object_store(cfg)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            pending = sum(
                sqlite3.connect(b).execute("SELECT coalesce(sum(n), 0) FROM events").fetchone()[0] for b in buffers
            )
            waiting = len(store.list_objects(f"{cfg.prefix}/staged/"))
            if pending == 0 and waiting == 0:
                break
            say(f"waiting: {pending} events in the hosts' buffers, {waiting} objects for the committer")
            time.sleep(2)
        say("stopping the shippers and the committer with SIGTERM")
        for p in loaders:
            p.send_signal(signal.SIGTERM)
        for p in loaders:
            p.wait(60)
        say("checking BigQuery through the client:")
        client = bigquery_client(cfg)
        ok = True
        print(f"  {'table':30s} {'appended':>9s} {'in BigQuery':>12s} {'distinct ids':>13s}")
        for s in STREAMS:
            row = list(
                client.query(
                    f"SELECT COUNT(*) AS n, COUNT(DISTINCT _event_id) AS d FROM `{cfg.project}.{cfg.dataset}.{s}`"
                ).result()
            )[0]
            good = row["n"] == counts[s] == row["d"]
            ok &= good
            print(f"  {s:30s} {counts[s]:9d} {row['n']:12d} {row['d']:13d}  {'ok' if good else 'MISMATCH'}")
        from bqspool.loader.layout import Layout
        from bqspool.loader.operate.status import commit_status

        tables = commit_status(store, Layout(cfg.prefix), cfg.quota_jobs_per_table_day, tables=list(STREAMS))["tables"]
        jobs = {t: tables[t]["jobs_24h"] for t in STREAMS}
        ok &= all(jobs[t] for t in STREAMS if counts[t])  # what loaded went through recorded jobs
        print(f"  load jobs per table, from the commit log: {jobs}")
        subprocess.run([bqspool, "status", "--buffer", str(buffers[0])], env=env)
        say("bqspool verify: the dataset against the schema set, and the exactly-once audit")
        verified = subprocess.run([bqspool, "verify", "--days", "2"], env=env)
        ok &= verified.returncode == 0
        for name in ("popular-products", "user-engagement"):
            say(f"bqspool query {name} (one of the seed's queries)")
            subprocess.run([bqspool, "query", name], env=env, check=True)
        say("bqspool monitor --once, after the outage (what fired is resolved):")
        after = subprocess.run([bqspool, "monitor", "--once", "--buffer", str(buffers[0])], env=env)
        ok &= outage_alert_ok and after.returncode == 0
    finally:
        for p in loaders:
            if p.poll() is None:
                p.kill()
        if not args.keep_stack:
            localstack.down(stack_dir)
    say("every appended event is in BigQuery exactly once" if ok else "MISMATCH: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
