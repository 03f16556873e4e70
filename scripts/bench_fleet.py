#!/usr/bin/env python3
"""Benchmark a fleet: many hosts ship to one bucket, one committer loads.

On the local stack (started and stopped here), in one run:
  ship      HOSTS buffer files (one per simulated host), each with events in
            several small batches, shipped by a pool of processes
  commit    one committer over every waiting object, in its own process
  host      one host's ship of a larger buffer, against the drain's local
            stage (Stager, Parquet only) on the same events
  handover  how many events one instance hands over in Cloud Run's 10 s:
            a buffer of 4.5M events, then `ship_once(deadline=8)` as on SIGTERM
and the checks:
  load jobs per table per commit == ceil(objects / 10,000) (one host's cost)
  committer wall time without BigQuery's own job time  <= 10 s
  committer CPU time (listing, grouping, records, archiving) <= 10 s
  committer peak RSS                                  <= 300 MB
  ship throughput per host / drain's local stage      >= 0.8x

Next to the committer's wall and CPU time it prints the floor the local stack
sets: each object read (8 at a time, as the committer reads them) and
decoded, nothing else, measured on a thousand of the same objects in the
same run: archiving reads every object it loaded into one archive file. Next to the ship ratio it prints where one ship's
time went (stage, upload, hand-over, housekeeping; a batch's upload and
hand-over run beside the next batch's stage) and each pair's ratio.

    python scripts/bench_fleet.py [--hosts 1000] [--objects-per-host 10] [--smoke]

Exits 1 when a target is missed, or when not every shipped event was loaded
once (--smoke: 8 hosts and small buffers, gated only on that).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_buffer import STREAM, make_events, report_checks
from bqspool.buffer import Buffer

SCHEMAS = "leafloaf"


def config(env: dict, buffer: Path, dataset: str, **kw):
    from bqspool.loader.config import load_config

    return replace(
        load_config(env=env), buffer=str(buffer), schemas=SCHEMAS, dataset=dataset, prefix=f"bench/{dataset}", **kw
    )


def fill(path: Path, n: int, per_call: int) -> None:
    with Buffer(path, SCHEMAS, durability="normal", max_bytes=None) as buf:
        events = make_events(n)
        for i in range(0, n, per_call):
            buf.append_many(STREAM, events[i : i + per_call])


def _ship_hosts(args: tuple) -> tuple[int, int, float]:
    """A pool worker: ship the hosts given; (objects, events, seconds)."""
    env, paths, dataset, batch_rows = args
    os.environ.update(env)
    from bqspool.loader.clients import make_drainer

    objects = events = 0
    t = time.perf_counter()
    for p in paths:
        report = make_drainer(
            config(env, Path(p), dataset, batch_rows=batch_rows), commit=False, progress=False
        ).ship_once()
        objects += report.batches_shipped
        events += report.events_shipped
    return objects, events, time.perf_counter() - t


def _commit(args: tuple) -> dict:
    """In a fresh process: commit everything; the report, with BigQuery's own job time apart."""
    env, dataset = args
    os.environ.update(env)
    from bqspool.loader.clients import make_committer

    committer = make_committer(config(env, Path("unused.db"), dataset, batch_per_job=10_000))
    wh = committer.warehouse
    in_jobs = [0.0]

    def timed(fn):
        def call(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                in_jobs[0] += time.perf_counter() - t

        return call

    wh.start_load, wh.wait = timed(wh.start_load), timed(wh.wait)
    cpu = time.process_time()
    report = committer.commit_once()
    return {**report.as_dict(), "job_seconds": in_jobs[0], "cpu_seconds": time.process_time() - cpu}


def _cpu_seconds(pid: int) -> float:
    """A process's user and system CPU time so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _read_floor(env: dict, gcs_pid: int, dataset: str, n: int = 1000) -> tuple[float, float, float]:
    """What archiving costs at the least, per object, on this stack: ``n`` of the staged
    objects read (8 at a time, into memory, as the committer reads them) and each
    opened and decoded, nothing else. Objects per second; this client's CPU seconds and
    fake-gcs-server's per object."""
    os.environ.update(env)
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq
    from bqspool.loader.clients import make_object_store

    cfg = config(env, Path("unused.db"), dataset)
    store = make_object_store(cfg)
    names = [o.name for o in store.list_objects(f"{cfg.prefix}/staged/")][:n]

    def read(i: int) -> int:  # as the committer reads a small object: into memory, opened once
        return pq.ParquetFile(pa.BufferReader(store.read_bytes(names[i]))).read(use_threads=False).num_rows

    t, client, server = time.perf_counter(), time.process_time(), _cpu_seconds(gcs_pid)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(read, range(len(names))))
    k = max(len(names), 1)
    return k / (time.perf_counter() - t), (time.process_time() - client) / k, (_cpu_seconds(gcs_pid) - server) / k


def stage_rate(path: Path, tmp: Path) -> float:
    from bqspool.loader.ship.stage import Stager, read_batch_payloads
    from bqspool.schemas import load_schema_set

    conn = sqlite3.connect(path)
    hi = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    stager = Stager(load_schema_set(SCHEMAS)[STREAM])  # a drainer has its schemas before it ships
    t = time.perf_counter()
    n = stager.write(read_batch_payloads(conn, STREAM, 1, hi), tmp / "stage.parquet")
    return n / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--objects-per-host", type=int, default=10, help="batches (objects) each host ships")
    ap.add_argument("--events-per-object", type=int, default=20)
    ap.add_argument("--workers", type=int, default=4, help="processes shipping the hosts")
    ap.add_argument("--host-events", type=int, default=200_000, help="events for the one-host throughput run")
    ap.add_argument("--host-runs", type=int, default=5, help="ships and stages of the one-host run (medians)")
    ap.add_argument("--handover-events", type=int, default=4_500_000, help="buffer for the 8-s SIGTERM hand-over")
    ap.add_argument("--smoke", action="store_true", help="a tiny run that gates only on exactly once")
    args = ap.parse_args()
    if args.smoke:
        args.hosts, args.objects_per_host, args.workers = 8, 2, 2
        args.host_events, args.host_runs, args.handover_events = 2_000, 1, 5_000

    from bqspool.loader.backends import localstack
    from bqspool.loader.clients import make_drainer, make_warehouse

    # The stack on tmpfs where there is one: fake-gcs-server writes every object to its root.
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        d = Path(tmp)
        hosts = d / "hosts"
        hosts.mkdir()
        per_host = args.objects_per_host * args.events_per_object
        t = time.perf_counter()
        paths = [hosts / f"h{i:05d}.db" for i in range(args.hosts)]
        for p in paths:
            fill(p, per_host, args.events_per_object)
        print(
            f"filled {args.hosts} buffers with {per_host} events each in {time.perf_counter() - t:.0f}s",
            file=sys.stderr,
        )
        one = d / "one.db"
        fill(one, args.host_events, 500)

        state = localstack.up(d / "stack", persistent=False)
        try:
            env = dict(os.environ, **state.env())
            os.environ.update(state.env())
            dataset = "bench_fleet"
            wh = make_warehouse(config(env, one, dataset))
            wh.ensure_dataset()
            from bqspool.schemas import load_schema_set

            for table in load_schema_set(SCHEMAS).tables():
                wh.ensure_table(table)

            shares = [
                (env, [str(p) for p in paths[k :: args.workers]], dataset, args.events_per_object)
                for k in range(args.workers)
            ]
            t = time.perf_counter()
            with mp.get_context("spawn").Pool(args.workers) as pool:
                shipped = pool.map(_ship_hosts, shares)
            ship_wall = time.perf_counter() - t
            objects = sum(s[0] for s in shipped)
            events = sum(s[1] for s in shipped)
            print(
                f"shipped {objects} objects ({events} events) from {args.hosts} hosts in {ship_wall:.0f}s",
                file=sys.stderr,
            )

            with mp.get_context("spawn").Pool(1) as pool:  # before the commit: it reads what is staged
                rate, client_cpu, server_cpu = pool.apply(_read_floor, (env, state.gcs_pid, dataset))
            with mp.get_context("spawn").Pool(1) as pool:
                commit = pool.apply(_commit, ((env, dataset),))
            loaded = sum(1 for _ in wh.client.query(f"SELECT 1 FROM `{wh.project}.{dataset}.{STREAM}`").result())

            # One host's throughput: ship against the local stage, the same events,
            # RUNS of each in turn (a fresh buffer for each ship), the median of each:
            # single runs vary by 10-20% here, more than the ship's margin.
            stages, ships = [], []
            for k in range(args.host_runs):
                stages.append(stage_rate(one, d))
                copy = d / f"one-ship-{k}.db"
                fill(copy, args.host_events, 500)
                drainer = make_drainer(config(env, copy, "bench_host"), commit=False, progress=False)
                ships.append(drainer.ship_once())
            stage = statistics.median(stages)
            report = sorted(ships, key=lambda r: r.events_shipped / r.seconds)[len(ships) // 2]
            pair_ratios = sorted(s.events_shipped / s.seconds / r for s, r in zip(ships, stages, strict=True))
            ship_rate = report.events_shipped / report.seconds

            # The 10-s hand-over: as much as an instance ships in its SIGTERM deadline.
            big = d / "handover.db"
            fill(big, args.handover_events, 500)
            drainer = make_drainer(config(env, big, "bench_handover"), commit=False, progress=False)
            t = time.perf_counter()
            handover = drainer.ship_once(deadline=time.monotonic() + 8.0)
            handover_s = time.perf_counter() - t
        finally:
            localstack.down(d / "stack")

    jobs_target = math.ceil(objects / 10_000)
    committer_s = commit["seconds"] - commit["job_seconds"]
    reads = commit["requests"].get("read", 0)
    floor_s = reads / rate  # the local stack's own time for reading and decoding what the committer archives
    results = {
        "hosts": args.hosts,
        "objects_shipped": objects,
        "events_shipped": events,
        "ship_wall_s": round(ship_wall, 1),
        "events_loaded": commit["events_loaded"],
        "rows_in_table": loaded,
        "load_jobs": commit["jobs_submitted"],
        "commit_wall_s": commit["seconds"],
        "commit_job_s": round(commit["job_seconds"], 2),
        "committer_peak_rss_mb": commit["peak_rss_mb"],
        "committer_requests": commit["requests"],
        "committer_objects_read": reads,
        "local_reads_per_s": round(rate),
        "local_read_floor_s": round(floor_s, 1),
        "read_cpu_ms_client": round(client_cpu * 1000, 2),
        "read_cpu_ms_server": round(server_cpu * 1000, 2),
        "committer_cpu_s": round(commit["cpu_seconds"], 1),
        "host_ship_rows_s": round(ship_rate),
        "host_stage_rows_s": round(stage),
        "host_ship_steps_s": report.step_seconds,
        "host_ratio_per_run": [round(x, 2) for x in pair_ratios],
        "handover_events_in_8s": handover.events_shipped,
        "handover_s": round(handover_s, 1),
    }
    print(json.dumps(results, indent=2))
    checks = [
        ("load jobs per table per commit", commit["jobs_submitted"], jobs_target, "<="),
        ("committer wall time without BigQuery's job time (s)", committer_s, 10, "<="),
        ("committer CPU time (s)", commit["cpu_seconds"], 10, "<="),
        ("committer peak RSS (MB)", commit["peak_rss_mb"], 300, "<="),
        ("host ship / drain's local stage", ship_rate / stage, 0.8, ">="),
    ]
    print(
        f"committer wall time, jobs excluded: {committer_s:.1f}s; reading and decoding its {reads} objects "
        f"alone takes {floor_s:.1f}s on the local stack ({rate:.0f} objects/s, 8 at a time; wall / that floor: "
        f"{committer_s / max(floor_s, 1e-9):.2f}x). A read costs {client_cpu * 1000:.2f} ms of this client's CPU "
        f"and {server_cpu * 1000:.2f} ms of fake-gcs-server's: the reads alone need {client_cpu * reads:.1f}s of "
        f"the committer's CPU (CPU / that floor: {commit['cpu_seconds'] / max(client_cpu * reads, 1e-9):.2f}x)"
    )
    took = report.step_seconds
    print(
        f"one host's ship of {report.events_shipped} events in {report.batches_shipped} batches took "
        f"{report.seconds:.2f}s: "
        + ", ".join(f"{k} {v:.2f}s" for k, v in took.items())
        + f" (a batch's upload and hand-over run beside the next batch's stage). Its own Parquet stage runs at "
        f"{report.events_shipped / took['stage'] / stage:.2f}x the drain's local stage; everything else costs "
        f"{(report.seconds - took['stage']) / report.seconds:.0%} of the ship. "
        f"Ship / stage run by run: {pair_ratios[0]:.2f}x to {pair_ratios[-1]:.2f}x."
    )
    # The pipeline's ceiling: batch N's upload and hand-over run beside batch N+1's stage, so
    # the last batch's (about a share of the totals) follow every stage, and the rest is serial.
    n = max(report.batches_shipped, 1)
    tail = (took.get("upload", 0.0) + took.get("handover", 0.0)) / n
    rest = sum(v for k, v in took.items() if k not in ("stage", "upload", "handover"))
    ceiling = report.events_shipped / (took.get("stage", 0.0) + tail + rest) / stage
    print(
        f"the pipeline's ceiling with {n} batches: the last batch's upload and hand-over ({tail:.2f}s) follow "
        f"every stage and the rest ({rest:.2f}s) runs alone, so ship / stage can reach {ceiling:.2f}x here; "
        f"this ship ran at {ship_rate / stage / ceiling:.2f} of that ceiling"
        + ("; the 0.8x target is above the ceiling at this batch size" if ceiling < 0.8 else "")
    )
    complete = loaded == events == commit["events_loaded"]
    if not complete:
        print(f"not every shipped event was loaded once: {events} shipped, {loaded} in the table")
    met = report_checks(checks)
    if args.smoke:
        print("smoke run: too small to judge the targets; gated only on every event loaded once")
    return 0 if (met or args.smoke) and complete else 1


if __name__ == "__main__":
    sys.exit(main())
