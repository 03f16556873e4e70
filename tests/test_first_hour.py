"""What a new user meets in the first hour: errors are one line that says what to do.

Each case runs the real command (or the library call) and checks for one
line, no traceback, and the documented exit code (docs/cli.md, "Exit codes").
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from bqspool.buffer import Buffer

BQSPOOL = str(Path(sys.executable).with_name("bqspool"))


def run(args, cwd, *, env=None, stdin=""):
    full = {k: v for k, v in os.environ.items() if not k.startswith("BQSPOOL_")}
    full.update(env or {})
    return subprocess.run([BQSPOOL, *args], input=stdin, capture_output=True, text=True, env=full, cwd=cwd, timeout=300)


def one_line(res) -> str:
    """The one line a failed command printed on stderr."""
    lines = [x for x in res.stderr.strip().splitlines() if x.strip()]
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_an_unknown_stream_says_the_nearest_one_and_keeps_the_event(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bqspool.buffer"), Buffer(tmp_path / "b.db", "leafloaf") as buf:
        buf.append("user_serach_events", {"query": "x"})
        (dead,) = buf.dead_letters()
    want = "unknown stream 'user_serach_events' (did you mean user_search_events?)"
    assert want in dead["reason"]
    assert any(want in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_usage_errors_exit_2_and_nothing_else_does(tmp_path):
    res = run(["drain", "--no-such-flag"], tmp_path)
    assert res.returncode == 2 and "No such option" in res.stderr
    from bqspool.loader import exit_codes

    ours = [code for code, _ in exit_codes.TABLE if code != exit_codes.USAGE]
    assert exit_codes.USAGE == 2 and 2 not in ours and len(set(ours)) == len(ours)
