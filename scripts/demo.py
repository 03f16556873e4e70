#!/usr/bin/env python3
"""The main job, for now: producers append events, then `bqspool status`.

Several threads append a few thousand events to the bundled ``leafloaf``
tables (a few of them invalid on purpose, so the dead-letter path shows),
then the buffer's status is printed with the real CLI.

    python scripts/demo.py [--buffer PATH] [--events N] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from bqspool.buffer import Buffer

WORDS = ["organic", "milk", "bread", "gluten", "free", "apples", "vegan", "cheese", "oat", "eggs"]


def search_event(rng: random.Random) -> dict:
    return {
        "user_id": f"user-{rng.randrange(500)}",
        "session_id": f"s-{rng.randrange(10**6)}",
        "timestamp": time.time(),
        "query": " ".join(rng.choices(WORDS, k=3)),
        "result_count": rng.randrange(100),
        "search_latency_ms": rng.randrange(5, 500),
    }


def interaction_event(rng: random.Random) -> dict:
    return {
        "user_id": f"user-{rng.randrange(500)}",
        "session_id": f"s-{rng.randrange(10**6)}",
        "timestamp": time.time(),
        "product_id": f"p-{rng.randrange(2000)}",
        "product_name": rng.choice(WORDS).title(),
        "interaction_type": rng.choice(["view", "click", "add_to_cart"]),
        "price": f"{rng.uniform(0.5, 30):.2f}",
    }


def order_event(rng: random.Random) -> dict:
    products = [
        {"product_id": f"p-{rng.randrange(2000)}", "quantity": rng.randrange(1, 4), "price": f"{rng.uniform(1, 20):.2f}"}
        for _ in range(rng.randrange(1, 5))
    ]
    return {
        "user_id": f"user-{rng.randrange(500)}",
        "timestamp": time.time(),
        "order_id": f"o-{rng.randrange(10**9)}",
        "total_amount": f"{sum(float(p['price']) * p['quantity'] for p in products):.2f}",
        "currency": "USD",
        "products": products,
        "total_latency_ms": rng.randrange(50, 2000),
    }


MAKERS = {
    "user_search_events": search_event,
    "product_interaction_events": interaction_event,
    "order_events": order_event,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--buffer", default=".bqspool/demo/buffer.db")
    ap.add_argument("--events", type=int, default=3000, help="events per thread")
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    path = Path(args.buffer)
    counts = {name: 0 for name in MAKERS}
    invalid = 0
    lock = threading.Lock()
    with Buffer(path, "leafloaf") as buf:
        before = buf.stats()

        def producer(k: int) -> None:
            nonlocal invalid
            rng = random.Random(k)
            mine = {name: 0 for name in MAKERS}
            bad = 0
            for i in range(args.events):
                stream = rng.choice(list(MAKERS))
                event = MAKERS[stream](rng)
                if i % 500 == 499:  # an app bug: a value of the wrong type
                    event["total_latency_ms" if stream == "order_events" else "timestamp"] = "not a time"
                    bad += 1
                else:
                    mine[stream] += 1
                buf.append(stream, event, wait=(i % 10 == 0))
            with lock:
                for name, n in mine.items():
                    counts[name] += n
                invalid += bad

        print(f"appending {args.events} events from each of {args.threads} threads to {path} ...", flush=True)
        t = time.perf_counter()
        threads = [threading.Thread(target=producer, args=(k,)) for k in range(args.threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        buf.flush()
        elapsed = time.perf_counter() - t
        after = buf.stats()
    total = sum(counts.values())
    print(f"appended {total} valid and {invalid} invalid events in {elapsed:.2f}s ({total / elapsed:,.0f}/s)")
    ok = True
    for name, n in counts.items():
        grew = after["streams"][name]["pending"] - before["streams"][name]["pending"]
        print(f"  {name}: {n} appended, {grew} new pending rows")
        ok &= grew == n
    grew_dead = after["dead_letters"] - before["dead_letters"]
    print(f"  dead letters: {grew_dead} new (expected {invalid})")
    ok &= grew_dead == invalid
    print("\n$ bqspool status", flush=True)
    env = dict(os.environ, BQSPOOL_BUFFER=str(path), BQSPOOL_SCHEMAS="leafloaf")
    bqspool = Path(sys.executable).with_name("bqspool")
    subprocess.run([str(bqspool), "status"], env=env, check=True)
    print("\nevery appended event is in the buffer" if ok else "\nMISMATCH between appended and stored events")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
