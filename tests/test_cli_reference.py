"""The command line documents itself: every command and option has help text,
docs/cli.md is what --help says, and the README lists every command."""

import re
import subprocess
import sys
from pathlib import Path

import click
from bqspool.loader.cli import main

ROOT = Path(__file__).resolve().parents[1]


def commands(cmd=main, path=("bqspool",)):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from commands(sub, path + (name,))


def test_every_command_and_option_has_help_text():
    missing = []
    for path, cmd in commands():
        if not (cmd.help or "").strip():
            missing.append(" ".join(path))
        for p in cmd.params:
            if isinstance(p, click.Option) and not (p.help or "").strip():
                missing.append(f"{' '.join(path)} {p.opts[0]}")
    assert not missing, missing


def test_the_reference_is_what_help_says():
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cli_reference.py"), "--check"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr


def test_the_readme_lists_every_command():
    block = re.search(r"## Command line.*?```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    listed = set()
    for line in block.splitlines():
        command = line.split("#")[0].strip()
        if command.startswith("bqspool "):
            # "bqspool setup | drain --once | run" names three commands
            listed |= {alt.split()[0] for alt in re.split(r" \| (?=[a-z])", command.removeprefix("bqspool "))}
    assert listed == set(main.commands), (sorted(set(main.commands) - listed), sorted(listed - set(main.commands)))


def test_the_operations_page_commands_work_on_a_real_buffer(tmp_path):
    """docs/operations.md shows how to inspect a buffer with the sqlite-utils CLI: run those lines."""
    import json
    import shlex

    from bqspool.buffer import Buffer

    buf = tmp_path / ".bqspool" / "buffer.db"
    with Buffer(buf, "eixa") as b:
        b.append_many("tasks", [{"user_id": "u", "task_id": str(i), "created_at": 0} for i in range(5)])
        b.append("tasks", {"nope": 1})
    text = (ROOT / "docs" / "operations.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    tool = str(Path(sys.executable).with_name("sqlite-utils"))
    snapshot = tmp_path / "snap.db"
    outputs = []
    for line in block.splitlines():
        line = line.split("  #")[0].strip()
        if not line.startswith("sqlite-utils"):
            continue
        args = shlex.split(line.replace("$B", str(snapshot)).replace("/tmp/buffer-snapshot.db", str(snapshot)))
        res = subprocess.run([tool, *args[1:]], capture_output=True, text=True, cwd=tmp_path)
        assert res.returncode == 0, (line, res.stderr)
        outputs.append(res.stdout)
    assert snapshot.exists() and len(outputs) >= 7
    assert {"stream": "tasks", "events": 5, "bytes": json.loads(outputs[2])[0]["bytes"]} == json.loads(outputs[2])[0]
    assert "REQUIRED field is missing" in outputs[-1]
