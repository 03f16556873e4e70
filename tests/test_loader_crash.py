"""Exactly once through crashes: at every step boundary, and at random moments."""

import random
import signal
import subprocess
import threading
import time

import pytest
from bqspool.buffer import Buffer
from bqspool.loader.faults import POINTS

from .events import make_event
from .loader_support import BQSPOOL, Env, append_in_calls, assert_exactly_once

STREAMS = ("user_interactions", "tasks")


def fill(env, n, seed):
    rng = random.Random(seed)
    appended = {s: [] for s in STREAMS}
    with Buffer(env.config.buffer, "eixa", strict=True, durability="normal") as buf:
        for s in STREAMS:
            appended[s] += append_in_calls(buf, s, [make_event(env.schemas[s], rng) for _ in range(n)])
    return appended


# Every fault point is crashed at, twice, on the in-memory fakes
# (test_drain_logic.py); on the real stack, the points where a real server's
# state matters: an object uploaded, a hand-over midway, a commit recorded,
# a job submitted or done, and each step of archiving: an archive file
# written, the loaded objects deleted, the record's summary written.
# Left to the fakes: a stage written locally (after_stage), the hand-over's
# end (after_ship), a split and a restore's copy (their own tests kill them).
REAL_STACK_POINTS = [p for p in POINTS if p not in ("after_stage", "after_ship", "after_split", "after_restore_copy")]


@pytest.mark.parametrize("point", REAL_STACK_POINTS)
def test_crash_at_each_step_then_drain_again(stack, tmp_path, point):
    env = Env(tmp_path, "eixa", batch_rows=40, batch_per_job=2)
    appended = fill(env, 100, point)
    crashed = env.drain_cli(fault=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr  # it died at the fault point
    # A second crash at the same point in the next drain, where it still applies.
    second = env.drain_cli(fault=point)
    assert second.returncode in (0, -signal.SIGKILL), second.stderr
    final = env.drain_cli()
    assert final.returncode == 0, final.stderr
    assert_exactly_once(env, appended)


def test_random_kill9_while_producers_append(stack, tmp_path):
    # Few jobs per drain: they are paced at 5 per 10 s per table.
    env = Env(tmp_path, "eixa", batch_rows=60, batch_per_job=25)
    rng = random.Random(11)
    appended = {s: [] for s in STREAMS}
    stop = threading.Event()
    errors = []

    def producer(k):
        prng = random.Random(k)
        try:
            with Buffer(env.config.buffer, "eixa", strict=True, durability="normal") as buf:
                while not stop.is_set():
                    s = STREAMS[prng.randrange(2)]
                    ids = buf.append_many(s, [make_event(env.schemas[s], prng) for _ in range(prng.randrange(1, 20))])
                    appended[s].extend(ids)
                    time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    kills = 0
    try:
        # The short version: scripts/soak_loader.py --kills 200 is the long one.
        while kills < 12:
            proc = subprocess.Popen(
                [BQSPOOL, "drain", "--once"],
                env=env.env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(rng.uniform(0.3, 1.5))
            if proc.poll() is None:
                proc.kill()
                kills += 1
            proc.wait(30)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    final = env.drain_cli()
    assert final.returncode == 0, final.stderr
    assert sum(len(v) for v in appended.values()) > 200
    assert_exactly_once(env, appended)
