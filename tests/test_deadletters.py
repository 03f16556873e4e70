"""Dead letters: replay after a fix, replay of dropped quarantined rows, purge, and the CLI."""

import json
import random
import shutil
import sqlite3
import subprocess
import threading

import pytest
from bqspool.buffer import Buffer
from bqspool.buffer.store import now_us
from bqspool.schemas.decode import decoder
from bqspool.schemas.errors import ConfigError
from bqspool.schemas.registry import BUNDLED_DIR

from .conftest import ALLTYPES, interaction
from .events import make_event
from .loader_support import BQSPOOL
from .stored import pending_events, stored_ids, stored_lines

S = "user_interactions"


def counters_agree(path) -> bool:
    conn = sqlite3.connect(path)
    try:
        counter = conn.execute("SELECT value FROM counters WHERE name = 'pending_bytes'").fetchone()[0]
        return counter == conn.execute("SELECT coalesce(sum(nbytes), 0) FROM events").fetchone()[0]
    finally:
        conn.close()


def eixa_copy(tmp_path):
    folder = tmp_path / "eixa"
    shutil.copytree(BUNDLED_DIR / "eixa", folder)
    return folder


def add_field(folder, table, name, type_):
    path = folder / f"{table}.json"
    doc = json.loads(path.read_text())
    doc["fields"].append({"name": name, "type": type_, "mode": "NULLABLE"})
    path.write_text(json.dumps(doc, indent=2))


def test_replay_after_a_schema_fix_keeps_event_ids_and_leaves_the_rest(tmp_path):
    schemas = eixa_copy(tmp_path)
    path = tmp_path / "b.db"
    with Buffer(path, schemas) as b:
        b.append(S, interaction())
        fixed_id = b.append(S, interaction(mood="calm"))  # unknown field until the schema has it
        b.append(S, interaction(duration_ms="long"))  # stays invalid
        b.append("no_such_table", {"x": 1})
        b.dead_letter(S, "{not json", "line 3: invalid JSON")
        assert b.stats()["dead_letters"] == 4

    add_field(schemas, S, "mood", "STRING")
    with Buffer(path, schemas) as b:
        report = b.replay_dead_letters()
        assert report.replayed == 1
        reasons = dict(report.still_bad)
        assert len(reasons) == 3
        assert any("duration_ms" in r for r in reasons.values())
        assert any("'no_such_table' is not in the schema set" in r for r in reasons.values())
        assert any("expected an object (dict), got str" in r for r in reasons.values())  # the line that was not JSON
        assert b.stats()["dead_letters"] == 3
        assert [e["mood"] for e in b.peek(S)] == [None, "calm"]
        # Replaying again changes nothing: the rows that fail stay, unchanged.
        again = b.replay_dead_letters()
        assert again.replayed == 0 and dict(again.still_bad) == reasons
    conn = sqlite3.connect(path)
    ids = stored_ids(conn)
    conn.close()
    assert ids[fixed_id] == 1 and len(ids) == 2
    assert pending_events(sqlite3.connect(path)) == 2
    assert counters_agree(path)


def test_replay_brings_dropped_quarantined_rows_back_as_the_same_events(tmp_path, alltypes):
    """`quarantine drop` stores a batch's stored rows as dead letters; replay must turn those
    stored values (epoch micros, base64, JSON text) back into the same events, ids included."""
    from bqspool.loader.layout import Layout
    from bqspool.loader.ship import ledger
    from bqspool.loader.ship import quarantine as holdback

    path = tmp_path / "b.db"
    rng = random.Random(7)
    stream = next(iter(alltypes))
    with Buffer(path, ALLTYPES, durability="normal") as b:
        ids = b.append_many(stream, [make_event(alltypes[stream], rng) for _ in range(300)])
    assert all(ids)
    conn = sqlite3.connect(path, isolation_level=None)
    before = stored_lines(conn, stream)
    buffer_id = conn.execute("SELECT value FROM meta WHERE key = 'buffer_id'").fetchone()[0]
    ledger.prepare(conn)
    ledger.seal(conn, stream, buffer_id, Layout("p"), 10_000, 1 << 30)
    (batch,) = ledger.batches(conn)
    ledger.quarantine(conn, batch.batch_id, "invalid: made up for the test")
    assert holdback.drop(conn, [batch.batch_id]) == (1, 300)
    assert pending_events(conn) == 0
    assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 300

    with Buffer(path, ALLTYPES) as b:
        report = b.replay_dead_letters(stream=stream)
    assert report.replayed == 300 and report.still_bad == []
    decode = decoder(alltypes[stream])
    # Same values in the same order (an empty REPEATED may now be written out as []).
    assert [decode(json.loads(x)) for x in stored_lines(conn, stream)] == [decode(json.loads(x)) for x in before]
    assert [json.loads(x)["_event_id"] for x in stored_lines(conn, stream)] == ids
    assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0
    conn.close()
    assert counters_agree(path)


def test_replay_refuses_stored_rows_with_columns_the_table_lost(tmp_path):
    schemas = eixa_copy(tmp_path)
    path = tmp_path / "b.db"
    with Buffer(path, schemas) as b:
        event_id = b.append(S, interaction())
    conn = sqlite3.connect(path, isolation_level=None)
    (line,) = stored_lines(conn)
    row = json.loads(line)
    row["retired_column"] = 1
    conn.execute("DELETE FROM events")
    conn.execute("UPDATE counters SET value = 0 WHERE name = 'pending_bytes'")
    conn.execute(
        "INSERT INTO dead_letters (stream, event_id, payload, reason, created_us) VALUES (?, ?, ?, ?, ?)",
        (S, event_id, json.dumps(row), "dropped", now_us()),
    )
    conn.close()
    with Buffer(path, schemas) as b:
        report = b.replay_dead_letters()
        assert report.replayed == 0
        assert "retired_column" in report.still_bad[0][1]
        assert b.stats()["dead_letters"] == 1


def test_replay_while_another_thread_appends_keeps_every_count(tmp_path):
    path = tmp_path / "b.db"
    schemas = eixa_copy(tmp_path)
    with Buffer(path, schemas, durability="normal") as b:
        b.append_many(S, [interaction(mood=str(i)) for i in range(1200)])  # all dead: no such field yet
    add_field(schemas, S, "mood", "STRING")
    with Buffer(path, schemas, durability="normal") as b:

        def appender():
            for _ in range(20):
                b.append_many(S, [interaction() for _ in range(100)])

        t = threading.Thread(target=appender)
        t.start()
        report = b.replay_dead_letters()
        t.join()
        assert report.replayed == 1200 and not report.still_bad
        assert b.stats()["streams"][S]["pending"] == 3200
    conn = sqlite3.connect(path)
    assert sum(stored_ids(conn).values()) == len(stored_ids(conn)) == 3200
    conn.close()
    assert counters_agree(path)


def test_purge_needs_a_selection_and_deletes_only_it(tmp_path):
    path = tmp_path / "b.db"
    with Buffer(path, "eixa") as b:
        for _i in range(3):
            b.append(S, interaction(duration_ms="x"))
        b.append("tasks", {"nope": 1})
        cutoff = now_us()
        b.append(S, interaction(duration_ms="y"))
        with pytest.raises(ConfigError):
            b.purge_dead_letters()
        assert b.stats()["dead_letters"] == 5
        first = min(d["id"] for d in b.dead_letters(None))
        assert b.purge_dead_letters(ids=[first]) == 1
        assert b.purge_dead_letters(stream="tasks") == 1
        assert b.purge_dead_letters(before_us=cutoff) == 2
        assert [json.loads(d["payload"])["duration_ms"] for d in b.dead_letters()] == ["y"]
        assert b.purge_dead_letters(everything=True) == 1
        assert b.stats()["dead_letters"] == 0


def test_dead_letters_cli(tmp_path):
    schemas = eixa_copy(tmp_path)
    path = tmp_path / "b.db"
    with Buffer(path, schemas) as b:
        b.append(S, interaction(mood="ok"))
        b.append(S, interaction(duration_ms="bad"))
    env_args = ["--buffer", str(path)]

    def run(*args, input=None):
        return subprocess.run([BQSPOOL, "dead-letters", *args], capture_output=True, text=True, input=input)

    listed = run("list", "--json", *env_args)
    assert listed.returncode == 0
    rows = json.loads(listed.stdout)  # one array; each payload the object it holds, each time ISO 8601
    assert [r["payload"].get("duration_ms") for r in rows] == ["bad", 12]  # newest first
    assert "mood" in rows[1]["reason"] and rows[0]["created"].endswith("Z") and "created_us" not in rows[0]
    assert [json.loads(line) for line in run("list", "--nl", *env_args).stdout.splitlines()] == rows
    csv_lines = run("list", "--csv", *env_args).stdout.splitlines()
    assert csv_lines[0].split(",")[0] == "id" and len(csv_lines) == 3
    assert "bad" in run("list", *env_args).stdout

    add_field(schemas, S, "mood", "STRING")
    replayed = run("replay", *env_args, "--schemas", str(schemas))
    assert replayed.returncode == 1  # one still fails
    assert "1 dead letter replayed as pending events, 1 still invalid" in replayed.stdout
    assert f"{rows[0]['id']}: " in replayed.stderr and "duration_ms" in replayed.stderr

    assert run("purge", *env_args).returncode == 1  # no selection
    assert run("purge", "--before", "last tuesday", *env_args).returncode == 2
    refused = run("purge", "--all", *env_args, input="n\n")
    assert refused.returncode != 0 and "delete 1 dead letter (of 1) for good?" in refused.stdout, refused.stdout
    assert len(json.loads(run("list", "--json", *env_args).stdout)) == 1
    done = run("purge", "--before", "0s", "--yes", *env_args)
    assert done.returncode == 0 and "1 dead letter deleted" in done.stdout
    assert run("list", *env_args).stdout.strip() == "no dead letters"
