"""Every command, and the Python API, resolve settings one way: defaults, then
bqspool.toml (or --config / BQSPOOL_CONFIG), then BQSPOOL_*, then flags.

Each command runs in a folder that holds only a bqspool.toml (the local
stack's endpoints come from the environment, as `local up` exports them;
no BQSPOOL_* variable is set).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest
from bqspool.buffer import Buffer

from .loader_support import BQSPOOL, clean_env
from .loader_support import run_in as run

GOOD = {"user_id": "u", "interaction_id": "i", "timestamp": 1_700_000_000}


@pytest.fixture
def folder(stack, tmp_path):
    """A folder with only a bqspool.toml: its own buffer path, schema set, dataset, bucket and prefix."""
    from bqspool.loader.clients import make_object_store
    from bqspool.loader.config import load_config

    name = f"c{uuid.uuid4().hex[:8]}"
    (tmp_path / "bqspool.toml").write_text(
        f'buffer = "spool/events.db"\nschemas = "eixa"\nproject = "{stack["state"].project}"\n'
        f'dataset = "{name}"\nbucket = "b-{name}"\n'
        f'prefix = "p/{name}"\n\n[ship]\nmax_delay = "1s"\ncheck = "1s"\n'
    )
    cfg = load_config(tmp_path / "bqspool.toml", env={k: v for k, v in os.environ.items() if "BQSPOOL_" not in k})
    make_object_store(cfg).ensure_bucket(cfg.location)
    return tmp_path


def test_every_command_reads_the_buffer_and_schemas_of_bqspool_toml(folder):
    res = run(["append", "user_interactions"], folder, stdin=json.dumps(GOOD) + "\n" + json.dumps({"x": 1}) + "\n")
    assert res.returncode == 1 and "1 event appended to user_interactions, 1 bad line\n" in res.stderr, res.stderr
    buffer = folder / "spool" / "events.db"
    assert buffer.exists() and not (folder / ".bqspool").exists()
    status = run(["status", "--json"], folder)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["streams"]["user_interactions"]["pending"] == 1
    shown = json.loads(run(["config", "show", "--json"], folder).stdout)
    assert shown["buffer"] == {"value": "spool/events.db", "source": "bqspool.toml"}
    assert run(["dead-letters", "list"], folder).returncode == 0
    assert run(["setup"], folder).returncode == 0
    drained = run(["drain", "--json"], folder)  # --once is drain's only mode
    assert drained.returncode == 0 and json.loads(drained.stdout)["events_loaded"] == 1, drained.stderr
    for args in (["ship", "--once"], ["commit", "--once"], ["quarantine", "list"], ["cost"], ["query"]):
        res = run(args, folder)
        assert res.returncode == 0, (args, res.stderr)
    verify = run(["verify", "--no-audit"], folder)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    monitor = run(["monitor", "--once", "--json"], folder)
    assert "no buffer on this host" not in monitor.stdout, monitor.stdout
    # The rest of the commands, each with the file alone.
    day = __import__("time").strftime("%Y-%m-%d", __import__("time").gmtime())
    rest = {
        ("restore", "--table", "user_interactions", "--since", day, "--into", "ui_copy"): 0,
        ("dead-letters", "replay"): 0,  # nothing to replay: append kept no bad line without --dead-letter
        ("dead-letters", "purge", "--all", "--yes"): 0,
        ("quarantine", "retry"): 0,
        ("schemas", "show", "eixa"): 0,
        ("config", "show"): 0,
    }
    for args, code in rest.items():
        res = run(list(args), folder)
        assert res.returncode == code and "Traceback" not in res.stderr, (args, res.stdout, res.stderr)
    assert json.loads(run(["status", "--json"], folder).stdout)["dead_letters"] == 0  # purged from that buffer
    runner = subprocess.Popen(
        [BQSPOOL, "run", "--role", "ship"], cwd=folder, env=clean_env(), stderr=subprocess.PIPE, text=True
    )
    try:
        line = runner.stderr.readline()  # the banner names the configured buffer
    finally:
        runner.terminate()
        try:
            rest = runner.communicate(timeout=60)[1]
        except subprocess.TimeoutExpired:
            runner.kill()
            rest = "(killed) " + runner.communicate()[1]
    assert "spool/events.db" in line, (line, rest)
    assert runner.returncode == 0, (line, rest)


def test_global_options_work_before_or_after_the_command_and_flags_win(folder):
    other = folder / "other.db"
    stdin = json.dumps(GOOD) + "\n"
    assert run(["--buffer", str(other), "append", "user_interactions"], folder, stdin=stdin).returncode == 0
    assert run(["append", "user_interactions", "--buffer", str(other)], folder, stdin=stdin).returncode == 0
    env = {"BQSPOOL_BUFFER": str(folder / "from-env.db")}
    status = run(["--buffer", str(other), "status", "--json"], folder, env=env)
    assert json.loads(status.stdout)["streams"]["user_interactions"]["pending"] == 2
    shown = json.loads(run(["--buffer", str(other), "config", "show", "--json"], folder, env=env).stdout)
    assert shown["buffer"] == {"value": str(other), "source": "--buffer"}
    shown = json.loads(run(["config", "show", "--json"], folder, env=env).stdout)
    assert shown["buffer"]["source"] == "BQSPOOL_BUFFER"  # the variable over the file
    assert not (folder / "spool").exists()


def test_config_flag_names_another_file_for_every_command(folder, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (folder / "bqspool.toml").rename(elsewhere / "site.toml")
    res = run(["--config", str(elsewhere / "site.toml"), "append", "user_interactions"], folder, stdin="{}\n")
    assert res.returncode == 1 and "REQUIRED field is missing" in res.stderr  # eixa, from that file
    assert (folder / "spool" / "events.db").exists()
    res = run(["status", "--config", str(elsewhere / "nope.toml")], folder)
    assert res.returncode == 1 and "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_buffer_with_no_path_uses_the_configured_buffer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("BQSPOOL_BUFFER", "BQSPOOL_SCHEMAS", "BQSPOOL_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "bqspool.toml").write_text('buffer = "from-file.db"\nschemas = "eixa"\n')
    with Buffer() as buf:
        assert buf.path == tmp_path / "from-file.db" and buf.schemas is not None
        buf.append("user_interactions", GOOD)
    monkeypatch.setenv("BQSPOOL_BUFFER", str(tmp_path / "from-env.db"))
    with Buffer() as buf:
        assert buf.path == tmp_path / "from-env.db"
    with Buffer(tmp_path / "given.db") as buf:  # a path given is that path
        assert buf.path == tmp_path / "given.db"


def test_a_misspelled_key_says_the_nearest_one(tmp_path):
    (tmp_path / "bqspool.toml").write_text('[ship]\nmax_dealy = "5m"\n')
    res = run(["config", "show"], tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown setting 'ship.max_dealy'" in lines[0], res.stderr
    assert "did you mean ship.max_delay?" in lines[0]
