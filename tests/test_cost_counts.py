"""The request counts on the real local stack: the adapters against the wire, and `cost` against the adapters."""

import json
import random

import pytest
from bqspool.buffer import Buffer
from bqspool.loader import billing

from .counting_proxy import CountingProxy
from .events import make_event
from .loader_support import Env
from .test_operate import cli


def _append(env: Env, per_table: dict[str, int], seed: int) -> None:
    rng = random.Random(seed)
    with Buffer(env.config.buffer, "eixa") as buf:
        for table, n in per_table.items():
            for lo in range(0, n, 4):  # a batch holds whole calls
                buf.append_many(table, [make_event(env.schemas[table], rng) for _ in range(min(4, n - lo))])


@pytest.fixture
def proxy(stack, monkeypatch):
    import os

    found = CountingProxy(os.environ["STORAGE_EMULATOR_HOST"])
    yield found
    found.close()


def test_the_adapters_count_what_reached_the_server(stack, proxy, tmp_path, monkeypatch):
    env = Env(tmp_path, "eixa", batch_rows=5)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)  # the drain's storage client goes through it
    drainer = env.drainer()
    _append(env, {"tasks": 12, "user_interactions": 8, "routines": 4}, seed=1)
    seen = proxy.snapshot()
    ship = drainer.ship_once()
    assert ship.batches_shipped == 6
    wire = {op: n - seen.get(op, 0) for op, n in proxy.snapshot().items() if n - seen.get(op, 0)}
    assert ship.requests == wire == {"insert": 6}
    seen = proxy.snapshot()
    commit = drainer.commit_once()
    assert commit.objects_loaded == 6
    wire = {op: n - seen.get(op, 0) for op, n in proxy.snapshot().items() if n - seen.get(op, 0)}
    assert commit.requests == wire  # every operation, deletes in batch requests too
    assert wire.get("copy", 0) == 0  # the archive is written, not copied object by object


def test_cost_reports_what_the_adapters_counted(stack, tmp_path):
    env = Env(tmp_path, "eixa", batch_rows=10)
    drainer = env.drainer()
    store = drainer.shipping.objects
    before = store.requests.snapshot()
    tables = [t.name for t in env.schemas.tables()]
    for i in range(3):
        _append(env, {t: 20 for t in tables}, seed=i)
        report = drainer.drain_once()
        assert report.events_loaded == 20 * len(tables)
    counted = store.requests.since(before)
    cost = json.loads(cli(env, "cost", "--days", "1", "--json").stdout)
    ops = cost["ingestion"]["storage_operations"]
    want = billing.by_class(counted)
    # Everything but the last commit's tail (left in the lease for the next holder) is in the log.
    assert want["class_a"] * 0.95 <= ops["class_a"] <= want["class_a"]
    assert want["class_b"] * 0.95 <= ops["class_b"] <= want["class_b"]
    usd = billing.usd(counted, 0.005, 0.0004)
    assert usd * 0.95 <= ops["usd"] <= usd * 1.0001
    assert sum(t["storage_operations"]["class_a"] for t in cost["tables"].values()) == ops["class_a"]
    assert cost["ingestion"]["bqspool_batch_loads_usd"] >= ops["usd"] > 0
    shown = cli(env, "cost", "--days", "1").stdout
    assert f"({ops['class_a']} class A, {ops['class_b']} class B)" in shown
    assert "$0.00 " not in shown.split("ingestion", 1)[1].splitlines()[1]  # bqspool's line is not "$0"
