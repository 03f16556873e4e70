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
