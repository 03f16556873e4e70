"""Helpers for loader tests: a fresh dataset per test on the session's stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path

from bqspool.loader.backends.google_clients import bigquery_client
from bqspool.loader.clients import make_committer, make_drainer, make_object_store, make_warehouse
from bqspool.loader.config import Config, load_config
from bqspool.schemas import load_schema_set

from . import stored

BQSPOOL = str(Path(sys.executable).with_name("bqspool"))


def wait_stopped(pid: int, timeout: float = 30) -> None:
    """Until ``pid`` is stopped (SIGSTOP at a fault point)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} never stopped")


class Env:
    """A buffer, a dataset and a prefix of one's own, on the shared stack."""

    def __init__(self, tmp_path: Path, schemas: str | Path, **overrides):
        self.tmp = tmp_path
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.dataset = f"t_{uuid.uuid4().hex[:10]}"
        base = load_config(env=os.environ)
        settings = dict(
            buffer=str(tmp_path / "buffer.db"),
            schemas=str(schemas),
            dataset=self.dataset,
            prefix=f"test/{self.dataset}",
            retry_initial=0.05,
            retry_maximum=0.5,
            retry_deadline=3.0,
            lease_seconds=10.0,
            # Streams come due a second after their oldest event, and `run` looks every
            # second: tests of the fleet see ships within seconds, not minutes.
            ship_max_delay="1s",
            ship_check="1s",
        )
        # A bucket of its own: fake-gcs-server's listings walk the whole
        # bucket on every call, so a bucket shared by the session slows down
        # every committer with every earlier test's objects.
        if base.bucket == "bqspool-local":
            settings["bucket"] = f"t-{self.dataset.removeprefix('t_').replace('_', '-')}"
        settings.update(overrides)
        self.config: Config = replace(base, **settings)
        if self.config.bucket != base.bucket:
            make_object_store(self.config).ensure_bucket(self.config.location)
        self.schemas = load_schema_set(schemas)
        wh = make_warehouse(self.config)
        wh.ensure_dataset()
        for table in self.schemas.tables():
            wh.ensure_table(table)
        self.warehouse = wh

    def env(self, **extra: str) -> dict[str, str]:
        c = self.config
        env = dict(os.environ)
        env.update(
            {
                "BQSPOOL_BUFFER": c.buffer,
                "BQSPOOL_SCHEMAS": c.schemas,
                "BQSPOOL_DATASET": c.dataset,
                "BQSPOOL_PREFIX": c.prefix,
                "BQSPOOL_RETRY_INITIAL": str(c.retry_initial),
                "BQSPOOL_RETRY_MAXIMUM": str(c.retry_maximum),
                "BQSPOOL_RETRY_DEADLINE": str(c.retry_deadline),
                "BQSPOOL_LEASE_SECONDS": str(c.lease_seconds),
                "BQSPOOL_MAX_CLOCK_SKEW": str(c.max_clock_skew),
                "BQSPOOL_BATCH_ROWS": str(c.batch_rows),
                "BQSPOOL_SHIP_MAX_DELAY": c.ship_max_delay,
                "BQSPOOL_SHIP_CHECK": c.ship_check,
                "BQSPOOL_SHIP_TARGET_BYTES": str(c.ship_target_bytes),
                "BQSPOOL_BATCH_PER_JOB": str(c.batch_per_job),
                "BQSPOOL_QUOTA_JOBS_PER_TABLE_DAY": str(c.quota_jobs_per_table_day),
                **(
                    {"BQSPOOL_QUOTA_JOBS_PER_TABLE_10S": str(c.quota_jobs_per_table_10s)}
                    if c.quota_jobs_per_table_10s
                    else {}
                ),
                "BQSPOOL_BUCKET": c.bucket or "",
                "BQSPOOL_PROJECT": c.project or "",
            }
        )
        env.pop("BQSPOOL_FAULT", None)
        env.update(extra)
        return env

    def drainer(self, **kw):
        return make_drainer(self.config, progress=False, **kw)

    def committer(self, **kw):
        return make_committer(self.config, **kw)

    def bucket(self, area: str) -> list[str]:
        """Object names under ``PREFIX/AREA/``, straight from fake-gcs-server's listing."""
        store = make_object_store(self.config)
        return [o.name for o in store.list_objects(f"{self.config.prefix}/{area}/")]

    def archived(self) -> dict[str, str]:
        """What the archive holds: each object's archive key (a batch's digest and half, or a
        restored copy's name) -> the archive file holding its rows (see bqspool.loader.archived)."""
        from bqspool.loader.archived import SOURCES_KEY

        store = make_object_store(self.config)
        out: dict[str, str] = {}
        for o in store.list_objects(f"{self.config.prefix}/archive/"):
            for key in filter(None, o.metadata.get(SOURCES_KEY, "").split(",")):
                out[key] = o.name
        return out

    def dead_in_bucket(self) -> dict[str, str]:
        """Events the commit stage dead-lettered (objects of one row in dead/): id -> reason."""
        import tempfile

        import pyarrow.parquet as pq

        store = make_object_store(self.config)
        out = {}
        for name in self.bucket("dead"):
            if name.endswith(".reason"):
                continue
            with tempfile.TemporaryDirectory() as tmp:
                store.download(name, Path(tmp) / "d.parquet")
                (row,) = pq.read_table(Path(tmp) / "d.parquet").to_pylist()
            found = store.read_object(name + ".reason")
            out[row["_event_id"]] = found[0].decode() if found else ""
        return out

    def paused(self, *args: str, fault: str) -> subprocess.Popen:
        """``bqspool ARGS`` running, stopped by SIGSTOP at ``fault`` (``POINT:N:stop``), as
        a paused VM would be; the caller sends SIGCONT and collects its output."""
        proc = subprocess.Popen(
            [BQSPOOL, *args],
            env=self.env(BQSPOOL_FAULT=fault),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_stopped(proc.pid)
        return proc

    def drain_cli(self, *args: str, fault: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        extra = {"BQSPOOL_FAULT": fault} if fault else {}
        return subprocess.run(
            [BQSPOOL, "drain", "--once", *args], env=self.env(**extra), capture_output=True, text=True, timeout=timeout
        )

    def bq_ids(self, table: str) -> Counter:
        client = bigquery_client(self.config)
        rows = client.query(f"SELECT _event_id FROM `{self.config.project}.{self.dataset}.{table}`").result()
        return Counter(r[0] for r in rows)

    def query(self, sql: str) -> list[dict]:
        return self.warehouse.query(sql.replace("{ds}", f"`{self.config.project}.{self.dataset}`"))

    # Read with sqlite-utils, never with bqspool's own reader: the code under
    # test is not its own oracle.
    def pending(self) -> int:
        return stored.pending_events(self.config.buffer)

    def batch_states(self) -> Counter:
        return stored.batch_states(self.config.buffer)


def no_rejected_group(env: Env) -> None:
    """The emulator writes the rows of a load job's earlier objects when a later one
    is rejected (BigQuery writes nothing): an exactly-once test on the local stack
    must never depend on such a job, so one that ran fails the test here."""
    store = make_object_store(env.config)
    for o in store.list_objects(f"{env.config.prefix}/commit-archive/"):
        if o.name.endswith(".failed-data"):
            doc = json.loads(store.read_object(o.name).data)
            assert len(doc.get("sources", ())) <= 1, (
                f"{o.name}: a load job of {len(doc['sources'])} objects was rejected; the emulator has loaded "
                "part of it (see test_emulator_differences.py), so this test cannot judge exactly-once here"
            )


def assert_exactly_once(env: Env, appended: dict[str, list[str]]) -> None:
    """Every appended id is in its table once, nothing else is there, the buffer is empty."""
    no_rejected_group(env)
    for table, ids in appended.items():
        got = env.bq_ids(table)
        missing = set(ids) - set(got)
        doubled = {k: n for k, n in got.items() if n > 1}
        extra = set(got) - set(ids)
        assert not missing, f"{table}: {len(missing)} events missing"
        assert not doubled, f"{table}: {len(doubled)} events loaded more than once"
        assert not extra, f"{table}: {len(extra)} unexpected events"
    assert env.pending() == 0
    # Nothing left behind: every shipped object loaded and archived, every commit closed.
    assert env.bucket("staged") == [] and env.bucket("commits") == []


def clean_env(extra: dict | None = None) -> dict[str, str]:
    """This environment without a BQSPOOL_* variable (the local stack's endpoints stay), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BQSPOOL_")}
    env.update(extra or {})
    return env


def run_in(args: list[str], cwd: Path, *, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    """``bqspool ARGS`` in ``cwd``, with no BQSPOOL_* variable but those of ``env``: what a
    user in that folder gets. The timeout only stops a hung command."""
    return subprocess.run(
        [BQSPOOL, *args], input=stdin, capture_output=True, text=True, env=clean_env(env), cwd=cwd, timeout=300
    )


def wait_until(what: str, done, timeout: float = 300.0, step: float = 0.1) -> None:
    """Poll ``done()`` until it is true: tests wait on state, not on wall-clock margins
    (the timeout only stops a hung test, far above any run's time)."""
    end = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < end, f"still waiting for {what} after {timeout:.0f}s"
        time.sleep(step)


def wait_buffer_lease_expired(buffer: str | Path) -> None:
    """Until the buffer's drain lease has run out, by the host clock its holders use."""
    import sqlite3

    from bqspool.buffer.store import now_us

    def expired() -> bool:
        conn = sqlite3.connect(buffer)
        try:
            row = conn.execute("SELECT expires_us FROM lease WHERE name = 'drain'").fetchone()
        finally:
            conn.close()
        return row is None or row[0] < now_us()

    wait_until("the buffer's lease to expire", expired)


def wait_bucket_lease_expired(env: Env) -> None:
    """Until the committers' lease in the bucket has run out, by the storage server's clock."""
    from bqspool.loader.commit import bucket_lease
    from bqspool.loader.layout import Layout

    store = make_object_store(env.config)
    name = Layout(env.config.prefix).lease
    wait_until("the bucket's lease to expire", lambda: bucket_lease.holder_of(store, name) is None)


def append_in_calls(buf, stream: str, events: list, per_call: int = 5) -> list:
    """append_many in calls of ``per_call`` events, as apps do: each call is
    one stored row, and a batch never splits a row, so small calls let small
    ``batch_rows`` settings make many batches."""
    ids = []
    for i in range(0, len(events), per_call):
        ids += buf.append_many(stream, events[i : i + per_call])
    return ids
