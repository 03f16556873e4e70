"""The bqspool command, run as a real subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

BQSPOOL = str(Path(sys.executable).with_name("bqspool"))


def run(args, *, stdin="", env=None, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BQSPOOL_")}
    full_env.update(env or {})
    return subprocess.run([BQSPOOL, *args], input=stdin, capture_output=True, text=True, env=full_env, cwd=cwd)


GOOD = {"user_id": "u", "interaction_id": "i", "timestamp": 1_700_000_000}


def test_append_keeps_good_lines_and_reports_bad_ones(tmp_path):
    lines = [
        json.dumps(GOOD),
        json.dumps({**GOOD, "tokens_in": 1.5}),
        "{not json",
        "",
        json.dumps({**GOOD, "timestamp": "2026-01-01T00:00:00Z"}),
        json.dumps([1, 2]),
    ]
    env = {"BQSPOOL_BUFFER": str(tmp_path / "b.db"), "BQSPOOL_SCHEMAS": "eixa"}
    res = run(["append", "user_interactions"], stdin="\n".join(lines) + "\n", env=env)
    assert res.returncode == 1
    assert "line 2: stream 'user_interactions': field 'tokens_in': expected INTEGER" in res.stderr
    assert "line 3: invalid JSON" in res.stderr
    assert "line 6:" in res.stderr and "expected an object" in res.stderr
    assert "2 events appended to user_interactions, 3 bad lines" in res.stderr
    status = json.loads(run(["status", "--json"], env=env).stdout)
    assert status["streams"]["user_interactions"]["pending"] == 2
    assert status["dead_letters"] == 0


def test_append_dead_letter_mode_and_options_over_env(tmp_path):
    env = {"BQSPOOL_BUFFER": str(tmp_path / "other.db"), "BQSPOOL_SCHEMAS": "leafloaf"}
    path = tmp_path / "b.db"
    stdin = json.dumps(GOOD) + "\n" + json.dumps({"user_id": 5}) + "\nnope\n"
    res = run(
        ["append", "user_interactions", "--buffer", str(path), "--schemas", "eixa", "--dead-letter"],
        stdin=stdin,
        env=env,
    )
    assert res.returncode == 1, res.stderr
    status = json.loads(run(["status", "--json", "--buffer", str(path)]).stdout)
    assert status["streams"]["user_interactions"]["pending"] == 1
    assert status["dead_letters"] == 2
    import sqlite3

    reasons = [r[0] for r in sqlite3.connect(path).execute("SELECT reason FROM dead_letters ORDER BY id")]
    assert any("'interaction_id': REQUIRED field is missing" in r for r in reasons)
    assert any(r.startswith("line 3: invalid JSON") for r in reasons)
    assert not (tmp_path / "other.db").exists()


def test_append_all_good_exits_zero(tmp_path):
    res = run(
        ["append", "tasks", "--buffer", str(tmp_path / "b.db"), "--schemas", "eixa"],
        stdin=json.dumps({"user_id": "u", "task_id": "t", "created_at": "2026-01-01T00:00:00Z"}) + "\n",
    )
    assert res.returncode == 0, res.stderr


def test_append_needs_schemas_and_status_needs_a_buffer(tmp_path):
    res = run(["append", "x", "--buffer", str(tmp_path / "b.db")], stdin="{}\n")
    assert res.returncode == 1 and "needs a schema set" in res.stderr
    res = run(["status", "--buffer", str(tmp_path / "missing.db")])
    assert res.returncode == 1 and "no buffer at" in res.stderr


def test_status_text(tmp_path):
    path = tmp_path / "b.db"
    run(["append", "user_interactions", "--buffer", str(path), "--schemas", "eixa"], stdin=json.dumps(GOOD) + "\n")
    res = run(["status", "--buffer", str(path), "--schemas", "eixa"])
    assert res.returncode == 0
    row = next(line for line in res.stdout.splitlines() if line.startswith("user_interactions"))
    assert row.split()[1] == "1"
    assert "dead letters: 0" in res.stdout and "tasks" in res.stdout


def test_schemas_check_and_show(tmp_path):
    res = run(["schemas", "check", "leafloaf"])
    assert res.returncode == 0 and "10 tables valid" in res.stdout
    bad = tmp_path / "set"
    bad.mkdir()
    (bad / "t.json").write_text(json.dumps({"fields": [{"name": "x", "type": "VARCHAR"}]}))
    res = run(["schemas", "check", str(bad)])
    assert res.returncode == 1 and "t.json" in res.stderr and "'x'" in res.stderr and "unknown type" in res.stderr
    shown = json.loads(run(["schemas", "show", "eixa", "tasks"]).stdout)
    assert shown[0]["name"] == "_event_id" and any(f["name"] == "created_at" for f in shown)
    full = json.loads(run(["schemas", "show", "eixa", "--rest"]).stdout)
    assert full["tasks"]["timePartitioning"]["field"] == "created_at"
    res = run(["schemas", "show", "eixa", "nope"])
    assert res.returncode == 1 and "has no table 'nope'" in res.stderr
