"""Every Python block in README.md and docs/ runs, on the local stack, as a reader would paste it.

Each block runs in its own interpreter (a Shipper installs signal handlers
and ships at exit, as it would in an app), after a few lines that define
the names a snippet leaves to its reader (``event``, ``buffer``,
``user_id``), in a folder of its own with a configured dataset and bucket.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

PRELUDE = """
import asyncio, time
from bqspool.buffer import Buffer
event = {"user_id": "u-1", "task_id": "t-1", "created_at": time.time()}
events = [dict(event, task_id=f"t-{i}") for i in range(3)]
user_id = "u-1"
buffer = Buffer("app.db", "eixa")
"""
# After a block that started a shipper: an event it must ship when the process exits.
SHIPPED = """
buffer.append("tasks", {"user_id": "u-2", "task_id": "t-last", "created_at": time.time()})
"""


def blocks() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for k, m in enumerate(BLOCK.finditer(doc.read_text())):
            out.append((f"{doc.name}#{k + 1}", m.group(1)))
    return out


def test_there_are_blocks_to_run():
    names = [n for n, _ in blocks()]
    assert {"README.md#1", "README.md#2", "deploy.md#1", "operations.md#1"} <= set(names), names


@pytest.mark.parametrize(("name", "code"), blocks(), ids=[n for n, _ in blocks()])
def test_every_python_block_compiles(name, code):
    ast.parse(code)  # top-level await parses too: it is a coroutine's body in the runner below


@pytest.fixture(scope="module")
def configured(stack, tmp_path_factory):
    """A dataset with the eixa tables, a bucket, and BQSPOOL_* naming them."""
    from dataclasses import replace

    from bqspool.loader.clients import make_object_store, make_warehouse
    from bqspool.loader.config import load_config
    from bqspool.schemas import load_schema_set

    name = f"d{uuid.uuid4().hex[:8]}"
    cfg = replace(load_config(), dataset=name, bucket=f"b-{name}", prefix=f"docs/{name}", schemas="eixa")
    make_object_store(cfg).ensure_bucket(cfg.location)
    wh = make_warehouse(cfg)
    wh.ensure_dataset()
    for table in load_schema_set("eixa").tables():
        wh.ensure_table(table)
    env = dict(os.environ, BQSPOOL_DATASET=cfg.dataset, BQSPOOL_BUCKET=cfg.bucket, BQSPOOL_PREFIX=cfg.prefix)
    env.update(BQSPOOL_SCHEMAS="eixa", BQSPOOL_SHIP_MAX_DELAY="1s", BQSPOOL_SHIP_CHECK="1s")
    return cfg, env


@pytest.mark.parametrize(("name", "code"), blocks(), ids=[n for n, _ in blocks()])
def test_every_python_block_runs_on_the_local_stack(name, code, configured, tmp_path):
    from bqspool.loader.clients import make_object_store

    cfg, env = configured
    body = code + (SHIPPED if "Shipper(" in code else "")
    # A block with `await` runs as a coroutine's body, as it would inside an app's async code.
    script = PRELUDE + "async def _block():\n" + textwrap.indent(body, "    ") + "\n    return locals()\n"
    script += "found = asyncio.run(_block())\n"
    res = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0 and "Traceback" not in res.stderr, (name, res.stderr)
    if "Shipper(" in code:  # the shipper shipped what was pending as the process exited
        staged = make_object_store(cfg).list_objects(f"{cfg.prefix}/staged/tasks/")
        assert staged, (name, res.stderr)


def test_the_env_file_of_the_systemd_recipe_is_a_valid_configuration():
    from bqspool.loader.config import load_config

    text = (ROOT / "docs" / "deploy.md").read_text()
    block = re.search(r"^```sh\n# /etc/bqspool.env.*?\n(.*?)^```", text, re.S | re.M)
    assert block, "docs/deploy.md shows /etc/bqspool.env"
    env = dict(line.split("=", 1) for line in block.group(1).splitlines() if line and not line.startswith("#"))
    cfg = load_config(env=env)  # every key is one bqspool knows, every value valid
    assert cfg.sources["bucket"] == "BQSPOOL_BUCKET" and cfg.buffer == "/var/lib/bqspool/buffer.db"
    cfg.require("schemas", "project", "dataset", "bucket")


SHELL = re.compile(r"^```(?:sh|bash|shell)\n(.*?)^```", re.S | re.M)
# A reader fills these in; the test fills them in the same way.
FILL = {
    "STREAM": "tasks",
    "TABLE": "tasks",
    "T": "tasks",
    "NAME": "user-analytics",
    "ID": "1",
    "IDS": "1",
    "PATH": "x.db",
    "FILE": "x.toml",
    "HOST:PORT": "127.0.0.1:8080",
    "SET": "eixa",
    "INTERVAL": "5m",
    "DIR": "some/dir",
    "NEW": "tasks_copy",
}


def _filled(line: str) -> str | None:
    """``line`` as a reader would type it: optional [parts] left out, placeholders filled,
    redirections and pipes dropped; None when a placeholder is left."""
    line = re.sub(r"\[[^\[\]]*\]", "", line)  # [--once | --every 5m]: optional
    line = re.sub(r"\s[<|].*$", "", line)  # < events.ndjson, | jq ...
    line = line.replace("ID..", "ID")
    for key in sorted(FILL, key=len, reverse=True):
        line = re.sub(rf"(?<![\w-]){re.escape(key)}(?![\w-])", FILL[key], line)
    return None if re.search(r"\b[A-Z][A-Z_]{1,}\b|\.\.\.|[{}$()\[\]]", line) else line


def _alternatives(line: str) -> list[str]:
    """``bqspool local up|env|down`` as three lines, one per alternative."""
    words = line.split(" ")
    if any("|" in w and re.search(r"[\[\]()]", w) for w in words):
        return []  # alternatives across optional parts: too loose to fill in
    for i, word in enumerate(words):
        if "|" in word and word.strip("|"):
            return [v for alt in word.split("|") for v in _alternatives(" ".join([*words[:i], alt, *words[i + 1 :]]))]
    return [line]


def command_lines() -> list[tuple[str, list[str]]]:
    """Every `bqspool ...` line of a shell block in README.md and docs/, filled in as a
    reader would (see _filled), arguments split."""
    import shlex

    out = []
    for doc in DOCS:
        for block in SHELL.findall(doc.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].strip()
                if not line.startswith("bqspool "):
                    continue
                for variant in _alternatives(line):
                    filled = _filled(variant)
                    if filled is not None:
                        out.append((f"{doc.name}: {variant}", shlex.split(filled)[1:]))
    return out


def test_there_are_commands_in_the_docs():
    assert len(command_lines()) >= 20, [w for w, _ in command_lines()]


@pytest.mark.parametrize(("where", "args"), command_lines(), ids=[w for w, _ in command_lines()])
def test_every_command_line_in_the_docs_parses(where, args):
    """Each documented command line names commands and options that exist (its arguments
    parse; --help stops it before it runs): no `No such option` for a reader."""
    from bqspool.loader.cli import main
    from click.testing import CliRunner

    res = CliRunner().invoke(main, [*args, "--help"], catch_exceptions=False)
    assert res.exit_code == 0 and "Usage:" in res.output, (where, res.output)


# What a documented line may do here: change nothing outside its own dataset, bucket and
# buffer, and end by itself (no `run`, no `monitor --every`, no `local up`).
RUNS_HERE = ("setup", "drain", "ship", "commit", "status", "config", "cost", "query", "verify", "quarantine list")


def runnable() -> list[tuple[str, list[str]]]:
    out = []
    for where, args in command_lines():
        words = " ".join(a for a in args if not a.startswith("-"))
        if any(words == c or words.startswith(c + " ") for c in RUNS_HERE) and "--serve" not in args:
            out.append((where, args))
    return out


def test_every_documented_command_that_can_run_here_runs(configured, tmp_path):
    """Each such line, as documented (placeholders filled in), on the local stack with a
    buffer that holds events: exit 0, no traceback."""
    cfg, env = configured
    env = dict(env, BQSPOOL_BUFFER=str(tmp_path / "buffer.db"))
    import time as clock

    from bqspool.buffer import Buffer

    with Buffer(tmp_path / "buffer.db", "eixa") as buf:
        buf.append_many("tasks", [{"user_id": "u", "task_id": str(i), "created_at": clock.time()} for i in range(5)])
    lines = runnable()
    assert len(lines) >= 12, [w for w, _ in lines]
    for where, args in lines:
        res = subprocess.run(
            [str(Path(sys.executable).with_name("bqspool")), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0 and "Traceback" not in res.stderr, (where, res.stdout[-500:], res.stderr[-2000:])
