"""verify, the exactly-once audit, restore, cost and the seeds' queries, on the local stack."""

import datetime as dt
import json
import subprocess
from collections import Counter

import pytest
from bqspool.buffer import Buffer
from bqspool.loader.backends.google_clients import bigquery_client
from bqspool.loader.clients import make_object_store
from bqspool.loader.layout import events_in

from .loader_support import BQSPOOL, Env

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def cli(env: Env, *args: str, fault: str | None = None, timeout: float = 120):
    """Run the command: in a process of its own where a fault point is to kill it, in this one otherwise."""
    if fault:
        extra = {"BQSPOOL_FAULT": fault}
        return subprocess.run([BQSPOOL, *args], env=env.env(**extra), capture_output=True, text=True, timeout=timeout)
    from bqspool.loader.cli import main
    from click.testing import CliRunner

    result = CliRunner(env=env.env()).invoke(main, list(args), catch_exceptions=False)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def interaction(i: int, user: str = "u1", **kw) -> dict:
    return {
        "user_id": user,
        "interaction_id": f"i{i}",
        "timestamp": (NOW - dt.timedelta(minutes=i)).isoformat(),
        "intent": "chat",
        "duration_ms": 100,
        "tokens_in": 10,
        "tokens_out": 20,
        "message_in": f"hello {i}",
        "message_out": f"hi {i}",
        **kw,
    }


def append(env: Env, stream: str, events: list[dict]) -> None:
    with Buffer(env.config.buffer, env.config.schemas, strict=True) as buf:
        for e in events:
            buf.append(stream, e)


def drain(env: Env) -> None:
    done = cli(env, "drain", "--once")
    assert done.returncode == 0, done.stderr


def table_ref(env: Env, table: str) -> str:
    return f"{env.config.project}.{env.dataset}.{table}"


# -- verify -------------------------------------------------------------------------------


def test_verify_finds_drift_fixes_what_is_safe_and_refuses_the_rest(stack, tmp_path):
    from google.cloud import bigquery

    env = Env(tmp_path, "eixa")
    clean = cli(env, "verify", "--no-audit")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "schema ok: 5 tables of eixa" in clean.stdout

    client = bigquery_client(env.config)
    env.query("ALTER TABLE {ds}.tasks DROP COLUMN origin")  # a NULLABLE column dropped: safe to add back
    # projects: duration retyped (the table made again under the loader's back)
    projects = client.get_table(table_ref(env, "projects"))
    fields = [
        bigquery.SchemaField(f.name, "STRING", f.mode) if f.name == "name" else f
        for f in projects.schema
        if f.name != "name"
    ] + [bigquery.SchemaField("name", "INT64")]
    client.delete_table(projects)
    remade = bigquery.Table(table_ref(env, "projects"), schema=fields)
    remade.time_partitioning = projects.time_partitioning
    remade.clustering_fields = projects.clustering_fields
    remade.labels = projects.labels
    client.create_table(remade)
    env.warehouse.update_options("routines", {"labels": {"app": "someone-else"}})
    env.warehouse.update_options("emotional_memories", {"expiration_days": 5})
    client.delete_table(table_ref(env, "user_interactions"))

    found = cli(env, "verify", "--no-audit")
    assert found.returncode == 7  # drift found
    lines = [x for x in found.stdout.splitlines() if x.startswith("drift")]
    expected = [
        "tasks: column origin: the schema file says STRING NULLABLE, BigQuery has no such column",
        "projects: column name type: the schema file says STRING, BigQuery has INTEGER",
        "routines: labels: the schema file says app=eixa, BigQuery has app=someone-else",
        "emotional_memories: partition expiration: the schema file says never, BigQuery has 5 days",
        "user_interactions: table: the schema file says a table, BigQuery has no such table",
    ]
    for text in expected:
        assert any(text in x for x in lines), (text, found.stdout)
    assert len(lines) == len(expected), found.stdout

    fixed = cli(env, "verify", "--no-audit", "--fix")
    assert fixed.returncode == 7  # the retyped column is refused: drift stays
    assert "refused: BigQuery cannot change a column's type in place" in fixed.stdout
    assert "restore --into NEW" in fixed.stdout
    assert sum(x.startswith("fixed") for x in fixed.stdout.splitlines()) == 4, fixed.stdout

    after = json.loads(cli(env, "verify", "--no-audit", "--json").stdout)
    assert [(d["table"], d["what"]) for d in after["drift"]] == [("projects", "column name type")]
    assert env.warehouse.table_options("routines")["labels"]["app"] == "eixa"
    assert env.warehouse.table_options("emotional_memories")["partitioning"]["expiration_days"] is None
    assert "origin" in env.warehouse.table_options("tasks")["columns"]


def test_the_audit_agrees_with_the_log_then_catches_rows_loaded_twice_and_cost_adds_up(stack, tmp_path):
    env = Env(tmp_path, "eixa", batch_rows=10)
    append(env, "user_interactions", [interaction(i) for i in range(25)])
    drain(env)
    ok = cli(env, "verify", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    audit = {a["table"]: a for a in json.loads(ok.stdout)["audit"]}
    ui = audit["user_interactions"]
    assert (ui["rows"], ui["distinct_ids"], ui["logged_events"], ui["difference"]) == (25, 25, 25, 0)
    assert ui["scanned_bytes"] is not None

    # cost: from the commit log, agreeing with what the archive holds (the objects' rows,
    # compacted into one file per record and day: the same events, in fewer bytes)
    archived = [o for o in make_object_store(env.config).list_objects(f"{env.config.prefix}/archive/")]
    report = json.loads(cli(env, "cost", "--days", "2", "--json").stdout)
    t = report["tables"]["user_interactions"]
    assert t["events"] == 25 and t["jobs"] >= 1
    assert sum(events_in(o.name) or 0 for o in archived) == 25 and len(archived) == t["jobs"]
    assert 0 < sum(o.size for o in archived) <= t["parquet_bytes"]
    ing = report["ingestion"]
    assert ing["storage_operations"]["class_a"] >= 2 * t["jobs"]  # at least an upload and a summary a job
    parts = ("staging_storage_usd", "archive_storage_usd")
    expected = ing["storage_operations"]["usd"] + sum(ing[k] for k in parts) + ing["lifecycle_transitions"]["usd"]
    assert ing["bqspool_batch_loads_usd"] == pytest.approx(expected, abs=1e-6) and expected > 0
    assert report["ingestion"]["legacy_streaming_usd"] == pytest.approx(25 * 1024 / (200 * 1024**2) * 0.01, abs=1e-6)
    assert report["archive"]["STANDARD"]["bytes"] == sum(o.size for o in archived)
    assert report["queries"]["available"] is False
    assert report["queries"]["reason"] == "this BigQuery endpoint keeps no job history"  # not the server's raw text
    shown = json.loads(cli(env, "status", "--json").stdout)["commit"]["archive"]["user_interactions"]
    assert shown["STANDARD"] == {"objects": len(archived), "bytes": sum(o.size for o in archived)}
    human = cli(env, "cost", "--days", "2")
    assert human.returncode == 0 and "queries: not available here" in human.stdout
    assert "BigQuery storage: not available here" in human.stdout

    # two rows loaded again behind the loader's back
    env.query(
        "INSERT INTO {ds}.user_interactions SELECT * FROM {ds}.user_interactions WHERE interaction_id IN ('i3', 'i7')"
    )
    bad = cli(env, "verify", "--json")
    assert bad.returncode == 7
    ui = {a["table"]: a for a in json.loads(bad.stdout)["audit"]}["user_interactions"]
    assert ui["duplicated"] == 2 and ui["difference"] == 2
    assert sorted(d["copies"] for d in ui["duplicates"]) == [2, 2]
    dup_ids = {d["_event_id"] for d in ui["duplicates"]}
    assert dup_ids == {k for k, n in env.bq_ids("user_interactions").items() if n == 2}
    human = cli(env, "verify")
    assert "DUPLICATES  user_interactions: 2 rows are extra copies" in human.stdout
    assert "the audit's queries scan" in human.stdout


# -- restore ---------------------------------------------------------------------------------


def test_restore_after_a_drop_brings_every_event_back_once_even_when_killed(stack, tmp_path):
    env = Env(tmp_path, "eixa", batch_rows=8, batch_per_job=2)
    tasks = [{"user_id": "u1", "task_id": f"t{i}", "created_at": NOW.isoformat()} for i in range(40)]
    append(env, "tasks", tasks)
    drain(env)
    loaded = env.bq_ids("tasks")
    assert len(loaded) == 40 and set(loaded.values()) == {1}

    refused = cli(env, "restore", "--table", "tasks", "--since", "1d")
    assert refused.returncode == 1
    # Five objects, loaded two to a job: three archive files, one per load job.
    assert "already holds rows of 3 of the 3 archive files" in refused.stderr
    assert "--into" in refused.stderr

    bigquery_client(env.config).delete_table(table_ref(env, "tasks"))
    assert cli(env, "setup").returncode == 0
    killed = cli(env, "restore", "--table", "tasks", "--since", "1d", fault="after_restore_copy:2")
    assert killed.returncode == -9
    killed = cli(env, "restore", "--table", "tasks", "--since", "1d", fault="after_submit")
    assert killed.returncode == -9
    done = cli(env, "restore", "--table", "tasks", "--since", "1d", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["selected"], report["loaded_objects"], report["loaded_events"]) == (3, 3, 40)
    assert report["resumed"] == 3  # all three were staged by the killed runs
    assert env.bq_ids("tasks") == loaded  # every id, once

    again = cli(env, "restore", "--table", "tasks", "--since", "1d", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["copied"] == 0
    assert env.bq_ids("tasks") == loaded

    copy = cli(env, "restore", "--table", "tasks", "--since", "1d", "--into", "tasks_copy")
    assert copy.returncode == 0, copy.stderr
    assert "created table tasks_copy" in copy.stdout
    assert env.bq_ids("tasks_copy") == loaded
    opts = env.warehouse.table_options("tasks_copy")
    assert opts["partitioning"]["field"] == "created_at" and opts["clustering"] == ["user_id"]

    nothing = cli(env, "restore", "--table", "tasks", "--since", "2020-01-01", "--until", "2020-01-02", "--json")
    assert nothing.returncode == 0 and json.loads(nothing.stdout)["selected"] == 0
    for args, message in [
        (("--table", "nope", "--since", "1d"), "has no table 'nope'"),
        (("--table", "tasks", "--since", "yesterday-ish"), "is not a time"),
        (("--table", "tasks", "--since", "1d", "--into", "routines"), "another table of the schema set"),
        (("--table", "tasks", "--since", "1d", "--into", "bad-name"), "a table name has"),
        (("--table", "tasks", "--since", "today", "--until", "3d"), "is after --until"),
    ]:
        bad = cli(env, "restore", *args)
        assert bad.returncode == 1 and message in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)


# -- the seeds' queries ---------------------------------------------------------------------


def test_the_eixa_queries_return_what_the_events_imply(stack, tmp_path):
    env = Env(tmp_path, "eixa")
    events = [interaction(i) for i in range(6)]
    events += [interaction(10 + i, intent="add_task", duration_ms=400, error_code="E1") for i in range(3)]
    events += [interaction(20, user="u2")]
    old = interaction(30)
    old["timestamp"] = (NOW - dt.timedelta(days=3)).isoformat()
    events.append(old)
    append(env, "user_interactions", events)
    created = (NOW - dt.timedelta(hours=2)).isoformat()
    tasks = [
        {"user_id": "u1", "task_id": "a", "created_at": created, "completed": False},
        {"user_id": "u1", "task_id": "a", "created_at": created, "completed": True, "updated_at": NOW.isoformat()},
        {"user_id": "u1", "task_id": "b", "created_at": created, "completed": False},
        {"user_id": "u1", "task_id": "c", "created_at": created, "completed": True},
        {"user_id": "u2", "task_id": "d", "created_at": created, "completed": True},
    ]
    append(env, "tasks", tasks)
    drain(env)

    def run(*args: str) -> list[dict]:
        done = cli(env, "query", *args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    (ua,) = run("user-analytics", "--param", "user_id=u1")
    # By default an aligned table: each value starts under its column's name.
    table = cli(env, "query", "user-analytics", "--param", "user_id=u1").stdout.splitlines()
    header, row = table[0], table[1]
    starts = [header.index(c) for c in ua]
    assert starts == sorted(starts) and all(k == 0 or row[k - 2 : k] == "  " for k in starts), table
    assert row[header.index("total_interactions") :].split()[0] == str(ua["total_interactions"])
    # Distinct UTC days of u1's events: two, or three when the run is just past midnight.
    days = {e["timestamp"][:10] for e in events if e["user_id"] == "u1"}
    assert ua["total_interactions"] == 10 and ua["active_days"] == len(days)
    assert ua["avg_duration_ms"] == pytest.approx((7 * 100 + 3 * 400) / 10)
    assert ua["total_tokens"] == 300 and ua["error_count"] == 3
    assert ua["top_intents"] == [{"value": "chat", "count": 7}, {"value": "add_task", "count": 3}]
    (recent,) = run("user-analytics", "--param", "user_id=u1", "--param", "days=1")
    assert recent["total_interactions"] == 9

    (rate,) = run("task-completion-rate", "--param", "user_id=u1")
    assert (rate["tasks"], rate["completed"]) == (3, 2) and rate["completion_rate"] == pytest.approx(2 / 3)

    history = run("recent-chat-history", "--param", "user_id=u1", "--param", "limit=4")
    assert [h["message_in"] for h in history] == ["hello 0", "hello 1", "hello 2", "hello 3"]

    from bqspool.loader.operate.queries import Analytics

    rows = Analytics(env.config).run("user-analytics", {"user_id": "u2", "days": 30})
    assert rows[0]["total_interactions"] == 1  # the library call an app's /analytics endpoint makes

    listing = cli(env, "query")
    assert "user-analytics" in listing.stdout and "user_id:STRING days:INT64=30" in listing.stdout
    for args, message in [
        (("user-analytics",), "needs --param user_id"),
        (("user-analytics", "--param", "user_id=u1", "--param", "days=many"), "parameter days (INT64)"),
        (("user-analytics", "--param", "user=u1"), "has no parameter user"),
        (("user-analytics", "--param", "user_id"), "write KEY=VALUE"),
        (("no-such-query",), "has no query 'no-such-query'"),
    ]:
        bad = cli(env, "query", *args)
        assert bad.returncode == 1 and message in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)
    # A parameter is a value, never SQL: a quote in it matches nothing and breaks nothing.
    assert run("user-analytics", "--param", "user_id=u1' OR '1'='1")[0]["total_interactions"] == 0


def test_the_leafloaf_queries_and_their_views(stack, tmp_path):
    env = Env(tmp_path, "leafloaf")
    searches = [
        {"user_id": f"u{i % 3}", "timestamp": (NOW - dt.timedelta(minutes=i)).isoformat(), "query": "milk"}
        | {"result_count": 10 * (i + 1)}
        for i in range(4)
    ]
    searches.append({"user_id": "u9", "timestamp": (NOW - dt.timedelta(hours=3)).isoformat(), "query": "eggs"})
    append(env, "user_search_events", searches)
    products = [
        {"user_id": "u1", "timestamp": NOW.isoformat(), "product_id": p, "product_name": p, "interaction_type": kind}
        for p, kind in [("milk", "view"), ("milk", "add_to_cart"), ("milk", "add_to_cart"), ("eggs", "view")]
    ]
    append(env, "product_interaction_events", products)
    drain(env)

    def run(name: str) -> list[dict]:
        done = cli(env, "query", name, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    (activity,) = run("recent-activity")
    assert activity["event_count"] == 4
    # The query counts the current UTC day; run it again if midnight passed while it ran.
    for _ in range(2):
        day = dt.datetime.now(dt.UTC).date()
        (engagement,) = run("user-engagement")
        if dt.datetime.now(dt.UTC).date() == day:
            break
    today = sum(1 for s in searches if s["timestamp"][:10] == day.isoformat())
    assert engagement["total_searches"] == today
    popular = run("popular-products")
    assert [(p["product_name"], p["interaction_count"], p["cart_adds"]) for p in popular] == [
        ("milk", 3, 2),
        ("eggs", 1, 0),
    ]

    views = cli(env, "setup", "--views")
    assert views.returncode == 0, views.stderr
    assert "created view popular_products (popular-products)" in views.stdout
    assert "3 views" in views.stdout
    via_view = env.query("SELECT * FROM {ds}.popular_products ORDER BY interaction_count DESC")
    assert Counter((r["product_name"], r["cart_adds"]) for r in via_view) == Counter({("milk", 2): 1, ("eggs", 0): 1})
    again = cli(env, "setup", "--views")  # idempotent: the views are there, or made again
    assert again.returncode == 0 and "view popular_products (popular-products)" in again.stdout
    assert "archive lifecycle: move to COLDLINE after 30 days" in views.stdout
