"""Every benchmark in scripts/ runs here in its --smoke size, so none can rot.

A smoke run is too small to judge a speed target, and gates none; what it
does check is what the full run's figures rest on: every event loaded once,
each figure present and positive, a ship's one insert per object.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def smoke(name: str) -> str:
    """Run scripts/NAME --smoke; its stdout, after checking it exited 0."""
    # The timeout only stops a hung run; a smoke run takes seconds.
    res = subprocess.run([sys.executable, str(SCRIPTS / name), "--smoke"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    return res.stdout


def figures(out: str) -> dict:
    """The JSON object a benchmark prints (an indented block from '{' to '}')."""
    block = re.search(r"^\{$.*?^\}$", out, re.S | re.M)
    assert block, out
    return json.loads(block.group(0))


def test_bench_buffer_smoke():
    out = smoke("bench_buffer.py")
    got = figures(out)
    for key in ("raw_limit_rows_s", "append_many_rows_s", "append_async_1000tasks_rows_s", "persist_queue_put_rows_s"):
        assert got[key] > 0, key
    assert "append_many / raw limit" in out and "nothing gated" in out


def test_bench_loader_smoke():
    out = smoke("bench_loader.py")
    got = figures(out)
    assert got["events"] == 3_000 and got["backlog_events"] == 5_000
    assert got["e2e_rows_s"] > 0 and got["limit_rows_s"] > 0 and got["backlog_peak_rss_mb"] > 0
    assert "a drain did not load every event" not in out


def test_bench_fleet_smoke():
    out = smoke("bench_fleet.py")
    got = figures(out)
    assert got["hosts"] == 8 and got["objects_shipped"] == 16
    assert got["events_shipped"] == got["events_loaded"] == got["rows_in_table"] == 320
    assert got["load_jobs"] >= 1 and got["committer_peak_rss_mb"] > 0


def test_bench_cost_smoke():
    out = smoke("bench_cost.py")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if re.match(r"^P\w+ +[\d,]+ ", line)}
    assert set(rows) == {"P1", "P2", "P2d", "P3"}, out
    for name, cols in rows.items():
        assert int(cols[2].replace(",", "")) > 0, name  # class A a day, from counted requests
    # A ship costs one insert per object, counted on the wire, not assumed.
    assert len(re.findall(r"a ship, per object \{'insert': 1\.0\}", out)) == 4, out
