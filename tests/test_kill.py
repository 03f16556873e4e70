"""kill -9 at random moments: every id append() returned is stored exactly once."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .stored import stored_ids

CHILD = Path(__file__).with_name("kill_child.py")


def run_kills(path, kills, durability, rng):
    printed = []
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, str(CHILD), str(path), durability], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.02, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        # A line cut by the kill is not a returned id.
        printed += [line for line in out.split("\n") if len(line) == 36]
    return printed


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_kill9_loses_nothing_and_doubles_nothing(tmp_path, durability):
    path = tmp_path / "k.db"
    printed = run_kills(path, 10, durability, random.Random(durability))
    assert len(printed) > 50
    conn = sqlite3.connect(path)
    stored = stored_ids(conn)
    missing = [i for i in printed if i not in stored]
    assert not missing, f"{len(missing)} acknowledged ids lost"
    assert max(stored.values()) == 1
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    nbytes = conn.execute("SELECT coalesce(sum(nbytes), 0) FROM events").fetchone()[0]
    assert conn.execute("SELECT value FROM counters WHERE name = 'pending_bytes'").fetchone()[0] == nbytes


@pytest.mark.slow
def test_kill9_soak(tmp_path):
    path = tmp_path / "soak.db"
    printed = run_kills(path, 200, "normal", random.Random(1))
    stored = stored_ids(sqlite3.connect(path))
    assert all(i in stored for i in printed) and max(stored.values()) == 1
