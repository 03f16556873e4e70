#!/usr/bin/env python3
"""What bqspool costs at three fleet sizes: measured on the local stack, extrapolated to a month.

For each profile, in one run on the local stack (started and stopped here):

  ships    a few of its hosts, each with a buffer of the profile's tables,
           appending at the profile's rate for several max_delay windows on
           a clock the benchmark steps (ship.check apart), shipping what is
           due: objects made and requests sent, counted by the adapters;
  commit   one commit of the objects a commit gets at the profile's scale
           (hosts x tables x schedule / max_delay), counted the same way.

Then, at list prices ([price] defaults): objects and class A/B requests a
day, bqspool's $ a month (requests, staging, archive files' moves to
COLDLINE; the archive's own storage, a retention choice, beside it), and
for the same rows legacy streaming inserts, the Storage Write API and a
Pub/Sub BigQuery subscription, bqspool's ratio to each, and the p95
append-to-loaded delay the settings give (the delay's arithmetic: an
event waits up to max_delay to ship and up to the schedule to commit; the
p95 of that sum, plus the measured commit time).

Profiles:
  P1  20 Cloud Run instances, 5 tables, 1 M events/day of 1 KB (eixa)
  P2  one VM, 10 tables, 5 M events/day of 400 B (leafloaf), `run --role all`,
      max_delay 45 min (P2d: the same at the defaults, for comparison)
  P3  1,000 hosts, 5 tables, 1 B events/day of 500 B (eixa)

Targets: P3 <= 0.1x legacy and <= 0.6x the Write API with p95 <= 10 min;
P2 <= $0.50/month; <= 1.1 class A per object in a commit of >= 100
objects per table; objects/day within max(data / target, hosts x tables x
day / max_delay). For P1 it prints the max_delay that makes it cheaper
than legacy streaming.

    python scripts/bench_cost.py [--smoke]

Exits 1 when a target is missed (--smoke: a tiny run, no targets).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.events: random valid events for any table

from bench_buffer import report_checks  # noqa: E402

DAY = 86_400.0
GIB, TIB = 1024**3, 1024**4


@dataclass(frozen=True)
class Profile:
    name: str
    what: str
    hosts: int
    schemas: str
    tables: int
    events_day: float
    event_bytes: int
    max_delay: float = 540.0  # the defaults: ship.max_delay and the commit schedule
    schedule: float = 90.0
    commit_after_ship: bool = False  # `run --role all` on one host: a commit follows each ship


PROFILES = (
    Profile("P1", "20 Cloud Run instances, 5 tables, 1 M events/day of 1 KB", 20, "eixa", 5, 1e6, 1024),
    Profile("P2", "one VM, 10 tables, 5 M events/day", 1, "leafloaf", 10, 5e6, 400, 2700.0, 2700.0, True),
    Profile("P2d", "P2 at the defaults (no target: for comparison)", 1, "leafloaf", 10, 5e6, 400, 540.0, 540.0, True),
    Profile("P3", "1,000 hosts, 5 tables, 1 B events/day of 500 B", 1000, "eixa", 5, 1e9, 500),
)


class SteppedClock:
    """The buffer's append times and the ship's "now", stepped by the benchmark."""

    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now


def env_for(state, tmp: Path, p: Profile, clock: SteppedClock):
    """A config with a bucket and dataset of the profile's own, its tables made."""
    from bqspool.buffer import store as buffer_store
    from bqspool.loader.clients import make_object_store, make_warehouse
    from bqspool.loader.config import load_config
    from bqspool.schemas import load_schema_set

    buffer_store.now_us = lambda: int(clock.now * 1_000_000)  # the benchmark's clock, for appends
    name = f"cost-{p.name.lower()}-{random.randrange(10**6)}"
    cfg = replace(
        load_config(env=os.environ), schemas=p.schemas, bucket=name, dataset=name.replace("-", "_"), prefix="b"
    )
    make_object_store(cfg).ensure_bucket(cfg.location)
    schemas = load_schema_set(p.schemas)
    wh = make_warehouse(cfg)
    wh.ensure_dataset()
    for t in schemas.tables()[: p.tables]:
        wh.ensure_table(t)
    return cfg, schemas


def simulate_ships(cfg, schemas, p: Profile, clock: SteppedClock, tmp: Path, hosts: int, windows: int) -> dict:
    """``hosts`` of the profile's hosts appending and shipping what is due for ``windows``
    max_delay windows, ship.check (10 s) apart: objects, events and requests."""
    from bqspool.buffer import Buffer
    from bqspool.loader.clients import make_object_store
    from bqspool.loader.ship.runner import Ship

    from tests.events import make_event

    store = make_object_store(cfg)
    tables = [t.name for t in schemas.tables()[: p.tables]]
    per_step = p.events_day / p.hosts / p.tables * 10 / DAY  # events per table per host per check
    settings = replace(cfg.settings(), max_delay=p.max_delay)
    ships = [
        Ship(tmp / f"{p.name}-{h}.db", schemas, store, settings, progress=False, clock=clock) for h in range(hosts)
    ]
    rng, owed, objects, events, shipped_at, stored, parquet = random.Random(1), 0.0, 0, 0, 0, 0, 0
    # The steady rate: objects after the first window's, over the time from the first ship to the last.
    first_at, last_at, later = None, 0, 0
    steps = int(windows * p.max_delay / 10)
    for step in range(steps):
        owed += per_step
        n, owed = int(owed), owed - int(owed)
        for ship in ships:
            if n:
                with Buffer(ship.path, schemas, durability="normal") as buf:
                    for t in tables:
                        made = [make_event(schemas[t], rng) for _ in range(n)]
                        stored += sum(len(json.dumps(e, default=str)) for e in made)
                        buf.append_many(t, made)
            report = ship.ship_once(due_only=True)
            if report.batches_shipped and first_at is None:
                first_at = step
            elif first_at is not None and step > first_at and report.batches_shipped:
                later, last_at = later + report.batches_shipped, step
            objects += report.batches_shipped
            events += report.events_shipped
            parquet += report.bytes_shipped
            shipped_at += 1 if report.batches_shipped else 0
        clock.now += 10
    return {
        "objects": objects,
        "events": events,
        "ship_events": shipped_at,  # ships that made objects (P2: each is followed by a commit)
        "requests": store.requests.snapshot(),
        "seconds": steps * 10,
        "rate": later / max(1, hosts * len(tables)) / max(10.0, (last_at - (first_at or 0)) * 10),  # a stream-second
        "streams": hosts * len(tables),
        "parquet_ratio": parquet / max(1, stored) if events else 0.25,  # Parquet bytes per event byte
    }


def commit_at_scale(cfg, schemas, p: Profile, tmp: Path, per_table: int) -> dict:
    """Stage ``per_table`` objects for each of the profile's tables (real ships), commit,
    then the same again with the same committer: the second commit is the one counted,
    a long-running committer's steady state (its first reads every table's budget and
    archive index; later ones keep them while it alone commits)."""
    from bqspool.buffer import Buffer
    from bqspool.loader.clients import make_committer, make_drainer

    from tests.events import make_event

    cfg = replace(cfg, prefix="scale")  # apart from what the simulation shipped
    path = tmp / f"{p.name}-scale.db"
    tables = [t.name for t in schemas.tables()[: p.tables]]
    rng = random.Random(2)
    drainer = make_drainer(replace(cfg, buffer=str(path), batch_rows=3), commit=False, progress=False)
    committer = make_committer(cfg)
    for _ in range(2):
        with Buffer(path, schemas, durability="normal") as buf:
            for t in tables:
                for _ in range(per_table):  # one call, one batch: a host's window of a table
                    buf.append_many(t, [make_event(schemas[t], rng) for _ in range(3)])
        ship = drainer.ship_once()
        report = committer.commit_once()
        assert report.objects_loaded == per_table * len(tables), report.as_dict()
    return {
        "objects": report.objects_loaded,
        "ship": ship.requests,
        "commit": report.requests,
        "seconds": report.seconds,
    }


def p95_delay(max_delay: float, schedule: float, load_s: float, after_ship: bool) -> float:
    """The p95 append-to-loaded delay, in seconds, the settings give.

    A steady stream ships when its oldest event is ``max_delay`` old, so an
    event waits U(0, max_delay) to ship; then U(0, schedule) for the next
    commit (none when a commit follows each ship), then the commit itself.
    For U(0, W) + U(0, C) with W >= C, the top 5% is the corner where
    (W + C - x)^2 / (2WC) = 0.05, so x = W + C - sqrt(0.1 W C) when C >= 0.1 W,
    else the middle: x = 0.95 W + C / 2.
    """
    if after_ship:
        return 0.95 * max_delay + load_s
    w, c = max(max_delay, schedule), min(max_delay, schedule)
    x = w + c - math.sqrt(0.1 * w * c) if c >= 0.1 * w else 0.95 * w + c / 2
    return x + load_s


def per_day(p: Profile, sim: dict, scale: dict, hosts_sim: int, cfg) -> dict:
    """The profile's day, from what its simulation and its commit at scale counted."""
    from bqspool.loader import billing

    objects_day = sim["rate"] * DAY * p.hosts * p.tables
    if p.commit_after_ship:
        commits_day = sim["ship_events"] / hosts_sim / sim["seconds"] * DAY * p.hosts
    else:
        commits_day = DAY / p.schedule
    ops: dict[str, float] = {}
    for op, n in sim["requests"].items():
        ops[op] = ops.get(op, 0.0) + n / max(1, sim["objects"]) * objects_day
    for op, n in scale["commit"].items():
        ops[op] = ops.get(op, 0.0) + n * commits_day
    c = billing.by_class({k: round(v) for k, v in ops.items()})
    per_table_commit = objects_day / max(1.0, commits_day) / p.tables
    files_day = commits_day * p.tables * max(1, math.ceil(per_table_commit / 256))
    parquet_day = p.events_day * p.event_bytes * sim["parquet_ratio"]
    usd_day = (
        c["class_a"] / 1000 * cfg.price_gcs_class_a_per_1000
        + c["class_b"] / 1000 * cfg.price_gcs_class_b_per_1000
        + files_day / 1000 * cfg.price_gcs_coldline_class_a_per_1000
        + parquet_day * (p.schedule / 2 / DAY) / GIB * cfg.price_gcs_standard_gib_month / 30  # staged meanwhile
    )
    return {
        "objects_day": objects_day,
        "commits_day": commits_day,
        "class_a_day": c["class_a"],
        "class_b_day": c["class_b"],
        "usd_month": usd_day * 30,
        "archive_month": parquet_day * 30 / GIB * cfg.price_gcs_standard_gib_month,  # its first 30 days
        "bound_day": max(parquet_day / cfg.ship_target_bytes, p.hosts * p.tables * DAY / p.max_delay),
    }


def alternatives(p: Profile, cfg) -> dict:
    """Legacy streaming, the Write API and a Pub/Sub BigQuery subscription, a month of the profile's rows."""
    month_bytes = p.events_day * 30 * p.event_bytes
    legacy = p.events_day * 30 * max(p.event_bytes, 1024) / (200 * 1024**2) * cfg.price_streaming_per_200mib
    write = max(0.0, month_bytes - cfg.price_storage_write_free_tib * TIB) / GIB * cfg.price_storage_write_per_gib
    pubsub = month_bytes / TIB * (cfg.price_pubsub_throughput_per_tib + cfg.price_pubsub_bigquery_per_tib)
    return {"legacy": legacy, "write_api": write, "pubsub": pubsub}


def run_profile(state, tmp: Path, p: Profile, smoke: bool) -> dict:
    """Simulate and measure one profile; its figures a day and a month."""
    clock = SteppedClock()
    cfg, schemas = env_for(state, tmp, p, clock)
    hosts_sim = 1 if smoke else min(p.hosts, 3)
    if smoke:  # a tiny run: two windows of two minutes
        p = replace(p, max_delay=min(p.max_delay, 120.0))
    sim = simulate_ships(cfg, schemas, p, clock, tmp, hosts_sim, windows=2 if smoke else 3)
    per_commit = p.hosts * (p.schedule / p.max_delay if not p.commit_after_ship else 1)
    per_table = 2 if smoke else max(1, math.ceil(per_commit))
    scale = commit_at_scale(cfg, schemas, p, tmp, per_table)
    day = per_day(p, sim, scale, hosts_sim, cfg)
    alt = alternatives(p, cfg)
    delay = p95_delay(p.max_delay, p.schedule, scale["seconds"], p.commit_after_ship)
    a_per_object = billing_a(scale["ship"], scale["commit"]) / max(1, scale["objects"])
    return {
        **{"p": p, "cfg": cfg, "day": day, "alt": alt, "p95_s": delay},
        **{"sim": sim, "scale": scale, "a_per_object": a_per_object},
    }


def billing_a(*ops: dict) -> int:
    from bqspool.loader import billing

    return sum(billing.by_class(o)["class_a"] for o in ops)


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'':4s} {'objects/day':>12s} {'class A/day':>12s} {'class B/day':>12s} {'bqspool $/mo':>13s} "
        f"{'legacy':>10s} {'Write API':>10s} {'Pub/Sub':>10s} {'vs legacy':>10s} {'vs Write':>9s} "
        f"{'vs PubSub':>10s} {'p95 delay':>10s} {'archive $/mo':>13s}"
    )
    print(head)
    for r in rows:
        d, a = r["day"], r["alt"]

        def ratio(v: float, usd: float = d["usd_month"]) -> str:
            return f"{usd / v:9.3f}x" if v else "  (free)"

        print(
            f"{r['p'].name:4s} {d['objects_day']:>12,.0f} {d['class_a_day']:>12,.0f} {d['class_b_day']:>12,.0f} "
            f"{d['usd_month']:>13.2f} {a['legacy']:>10.2f} {a['write_api']:>10.2f} {a['pubsub']:>10.2f} "
            f"{ratio(a['legacy']):>10s} {ratio(a['write_api']):>9s} {ratio(a['pubsub']):>10s} "
            f"{r['p95_s'] / 60:>8.1f}m {d['archive_month']:>13.2f}"
        )
    for r in rows:
        p = r["p"]
        print(
            f"  {p.name}: {p.what}; max_delay {p.max_delay / 60:g} min, "
            + ("a commit after each ship" if p.commit_after_ship else f"a commit every {p.schedule:g} s")
        )
    print("  archive $/mo: the archive's first 30 days in STANDARD (a retention choice, not in bqspool $/mo)")
    for r in rows:
        sim, scale = r["sim"], r["scale"]
        ship = {op: round(n / max(1, sim["objects"]), 2) for op, n in sim["requests"].items()}
        print(
            f"  {r['p'].name} measured: a ship, per object {ship}; a commit of {scale['objects']} objects "
            f"({scale['objects'] // r['p'].tables} a table) {scale['commit']} in {scale['seconds']:.1f}s"
        )


def break_even(r: dict) -> float | None:
    """The smallest max_delay, in minutes, at which the profile costs less than legacy
    streaming when the commit schedule is as long (one commit a window): from its
    measured requests per object and per commit (class A; class B adds under 10%)."""
    p, sim = r["p"], r["sim"]
    per_object = billing_a(sim["requests"]) / max(1, sim["objects"])
    per_commit = billing_a(r["scale"]["commit"])
    price = r["cfg"].price_gcs_class_a_per_1000 / 1000
    for minutes in (9, 12, 15, 20, 25, 30, 45, 60, 90, 120, 240):
        windows = DAY / (minutes * 60)
        usd = 30 * price * windows * (p.hosts * p.tables * per_object + per_commit)
        if usd < r["alt"]["legacy"]:
            return minutes
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a tiny run that checks no target")
    args = ap.parse_args()
    from bqspool.loader.backends import localstack

    tmp = Path(tempfile.mkdtemp(prefix="bqspool-cost-"))
    state = localstack.up(tmp / "stack", persistent=False)
    os.environ.update(state.env())
    try:
        rows = []
        for p in PROFILES:
            print(f"{p.name}: simulating ...", file=sys.stderr, flush=True)
            rows.append(run_profile(state, tmp, p, args.smoke))
    finally:
        localstack.down(tmp / "stack")
    print_table(rows)
    by = {r["p"].name: r for r in rows}
    even = break_even(by["P1"])
    print(
        f"  P1: cheaper than legacy streaming from max_delay = {even} min (commits as often); the Write API's "
        "free 2 TiB make it $0 there"
        if even
        else "  P1: not cheaper than legacy streaming at any max_delay tried"
    )
    if args.smoke:
        return 0
    return 0 if report_checks(checks(by)) else 1


def checks(by: dict) -> list[tuple[str, float, float, str]]:
    """(what, measured, limit, "<=") for every target."""
    p3, p2 = by["P3"], by["P2"]
    out = [
        ("P3 bqspool / legacy streaming", p3["day"]["usd_month"] / p3["alt"]["legacy"], 0.1, "<="),
        ("P3 bqspool / Storage Write API", p3["day"]["usd_month"] / p3["alt"]["write_api"], 0.6, "<="),
        ("P3 p95 append-to-loaded (min)", p3["p95_s"] / 60, 10.0, "<="),
        ("P2 bqspool $/month", p2["day"]["usd_month"], 0.50, "<="),
        ("P3 class A per object (commit of >= 100 a table)", p3["a_per_object"], 1.1, "<="),
    ]
    for name, r in by.items():
        out.append((f"{name} objects/day over its bound", r["day"]["objects_day"] / r["day"]["bound_day"], 1.0, "<="))
    return out


if __name__ == "__main__":
    sys.exit(main())
