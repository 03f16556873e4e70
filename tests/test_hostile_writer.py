"""The writer under hostile input and a hostile host.

One bad event never costs good ones; every exception a caller's value raises
becomes that event's error or dead letter; no value stalls the process; dead
letters respect the size cap; the file is moved aside only when it is truly
corrupt and nobody else holds it.
"""

import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from bqspool.buffer import Buffer, BufferFormatError, ConfigError, EventsLostError, ValidationError
from bqspool.schemas import load_schema_set
from bqspool.schemas.errors import BufferUnavailableError, DiskFullError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import hostile
from .conftest import ALLTYPES
from .loader_support import BQSPOOL
from .stored import sqlite_utils_db, stored_ids

E = "everything"
GOOD = {"id": "good"}


def good(i):
    return {"id": f"good-{i}", "i": 7, "s": "fine"}


def dead_rows(path):
    """(stream, event_id, payload, reason) of every dead letter, oldest first, read with sqlite-utils."""
    return [
        (r["stream"], r["event_id"], r["payload"], r["reason"])
        for r in sqlite_utils_db(path)["dead_letters"].rows_where(order_by="id")
    ]


file_ids = stored_ids  # what the file holds, read with sqlite-utils


# -- 1. one bad event never sinks its group ----------------------------------


def test_a_stream_name_with_a_lone_surrogate_costs_no_other_event(tmp_path):
    path = tmp_path / "b.db"
    with Buffer(path, "leafloaf", flush_interval=0.5) as buf:
        event = {"user_id": "u", "event_type": "view", "timestamp": "2026-11-24T10:00:00Z"}
        ids = [buf.append("user_events", event, wait=False) for _ in range(100)]
        bad_id = buf.append("user_\udcffevents", event)  # non-strict: a dead letter, not a raw error
        buf.flush()
        stats = buf.stats()
    assert len(set(ids)) == 100 and bad_id
    assert set(ids) <= set(file_ids(path))
    assert stats["streams"]["user_events"]["pending"] == 100
    assert stats["process"]["lost"] == 0 and stats["lost"] == 0
    (row,) = dead_rows(path)
    assert row[0] == "user_\\udcffevents" and row[1] == bad_id and "unknown stream" in row[3]


def test_strict_mode_raises_for_the_bad_stream_and_keeps_the_group(tmp_path):
    path = tmp_path / "b.db"
    with Buffer(path, ALLTYPES, strict=True, flush_interval=0.5) as buf:
        ids = [buf.append(E, good(i), wait=False) for i in range(50)]
        with pytest.raises(ValidationError, match="unknown stream"):
            buf.append("x\udcff", GOOD)
        buf.flush()
    assert set(ids) == set(file_ids(path))


def _every_bad_input():
    from .test_bad_input import CORPUS

    out = [(stream, event) for _, stream, event, _, _ in CORPUS]
    out += [(E, {"id": "x", field: value}) for _, field, value in hostile.HOSTILE_VALUES]
    out += [
        ("user_\udcffevents", GOOD),
        (hostile.RaisingRepr(), GOOD),
        ("s" * 100_000, GOOD),
        (E, hostile.GetitemRaises()),
        (E, {hostile.EqRaisesKey("id"): 1}),
    ]
    return out


def test_every_kind_of_bad_input_mixed_into_groups_from_many_threads(tmp_path):
    """Good wait=False and wait=True appends from 6 threads, with every bad input
    of the corpus interleaved: every good event is stored, every bad one is a
    dead letter, and nothing is lost."""
    path = tmp_path / "b.db"
    bad = _every_bad_input()
    expected, errors = [], []
    with Buffer(path, ALLTYPES, flush_interval=0.02, durability="normal") as buf:

        def worker(n):
            try:
                for k, (stream, event) in enumerate(bad):
                    if k % 6 != n:
                        continue
                    for j in range(5):
                        expected.append(buf.append(E, good(f"{n}-{k}-{j}"), wait=bool(j % 2)))
                    buf.append(stream, event, wait=bool(k % 2))
                    expected.extend(buf.append_many(E, [good(f"{n}-{k}-m{j}") for j in range(3)], wait=False))
            except Exception as exc:  # pragma: no cover - the assertion below shows it
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        buf.flush()
        stats = buf.stats()
    assert not errors, errors
    stored = file_ids(path)
    missing = set(expected) - set(stored)
    assert not missing, f"{len(missing)} of {len(expected)} good events missing; stats {stats['process']}"
    assert set(stored) == set(expected) and all(n == 1 for n in stored.values())
    assert stats["dead_letters"] == len(bad)
    assert stats["process"]["lost"] == 0


def test_a_row_that_fails_inside_the_commit_is_dead_lettered_alone(tmp_path):
    # Append checks every row, so a row SQLite refuses can only come from a
    # bug; the commit must still store the others. Queue one directly.
    path = tmp_path / "b.db"
    with Buffer(path, ALLTYPES, flush_interval=10) as buf:
        ids = [buf.append(E, good(i), wait=False) for i in range(20)]
        buf._enqueue([(E, '{"_event_id":"bad-one","id":"\udcff"}', 1, 30, 0)], [], wait=False)
        ids += [buf.append(E, good(i + 20), wait=False) for i in range(20)]
        buf.flush()
        stats = buf.stats()
    assert set(ids) == set(file_ids(path))
    (row,) = dead_rows(path)
    assert row[1] == "bad-one" and "could not be stored" in row[3] and "\\udcff" in row[2]
    assert stats["process"]["lost"] == 0
    assert stats["pending_bytes"] == sum(r[0] for r in sqlite3.connect(path).execute("SELECT nbytes FROM events"))


def test_a_failure_of_the_file_is_reported_to_wait_false_callers(tmp_path):
    path = tmp_path / "b.db"
    with Buffer(path, ALLTYPES, durability="normal") as buf:
        buf.append(E, GOOD)
    pages = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
    with Buffer(path, ALLTYPES, flush_interval=10, pragmas={"max_page_count": pages + 1}) as buf:
        for i in range(30):
            buf.append(E, {"id": str(i), "s": "y" * 20_000}, wait=False)
        with pytest.raises(EventsLostError) as err:
            buf.flush()
        assert err.value.lost == 30 and isinstance(err.value.__cause__, DiskFullError)
        assert buf.stats()["process"]["lost"] == 30
        buf.flush()  # told once
        buf._writer._conn.execute(f"PRAGMA max_page_count = {pages + 1000}")
        buf.append(E, GOOD)  # the next commit records the loss in the file
        assert buf.stats()["lost"] == 30


def test_cli_append_of_a_bad_stream_name_stores_dead_letters_not_a_traceback(tmp_path):
    path = tmp_path / "b.db"
    lines = b"\n".join(json.dumps(good(i)).encode() for i in range(5)) + b"\n"
    stream = os.fsdecode(b"every\xffthing")  # a non-UTF-8 argv byte arrives as a lone surrogate
    res = subprocess.run(
        [BQSPOOL, "append", stream, "--buffer", str(path), "--schemas", str(ALLTYPES), "--dead-letter"],
        input=lines,
        capture_output=True,
    )
    assert b"Traceback" not in res.stderr and res.returncode == 1, res.stderr
    assert len(dead_rows(path)) == 5
    res = subprocess.run(
        [BQSPOOL, "append", E, "--buffer", str(path), "--schemas", str(ALLTYPES)],
        input=lines + b'{"id": "x", "i": "1e999999999"}\n',
        capture_output=True,
        timeout=30,
    )
    assert res.returncode == 1 and b"line 6" in res.stderr and b"Traceback" not in res.stderr
    assert sum(file_ids(path).values()) == 5


# -- 2 and 3. every value: a clear error, within a CPU bound ------------------


@pytest.mark.parametrize("kind,field,value", hostile.HOSTILE_VALUES, ids=[h[0] for h in hostile.HOSTILE_VALUES])
def test_hostile_value_is_a_clear_error_within_its_cpu_bound(tmp_path, kind, field, value):
    with Buffer(tmp_path / "b.db", ALLTYPES, strict=True, durability="normal") as buf:
        buf.append(E, GOOD)  # the writer is warm
        start = time.process_time()
        with pytest.raises(ValidationError) as err:
            buf.append(E, {"id": "x", field: value})
        cpu = time.process_time() - start
    assert err.value.path.startswith(field), str(err.value)
    assert len(str(err.value)) < 500
    # The bound is 10 ms; the margin absorbs a slow, shared machine.
    assert cpu < 0.05, f"{kind}: {cpu * 1000:.1f} ms of CPU"


@pytest.mark.parametrize(
    "kind,field,value", hostile.HOSTILE_VALUES[:12], ids=[h[0] for h in hostile.HOSTILE_VALUES[:12]]
)
def test_hostile_value_in_default_mode_is_a_bounded_dead_letter(tmp_path, kind, field, value):
    path = tmp_path / "b.db"
    with Buffer(path, ALLTYPES, durability="normal") as buf:
        event_id = buf.append(E, {"id": "x", field: value})
    (row,) = dead_rows(path)
    assert row[1] == event_id and field in row[3] and len(row[3]) < 500


def test_the_original_exception_is_chained(tmp_path):
    with Buffer(tmp_path / "b.db", ALLTYPES, strict=True) as buf:
        with pytest.raises(ValidationError) as err:
            buf.append(E, hostile.GetitemRaises())
        assert isinstance(err.value.__cause__, hostile.Boom)
        with pytest.raises(ValidationError, match="'ts'") as err:
            buf.append(E, {"id": "x", "ts": hostile.dt.datetime(2026, 1, 1, tzinfo=hostile.RaisingTz("raise"))})
        assert isinstance(err.value.__cause__, hostile.Boom)


def test_subclasses_and_numpy_values_are_accepted_where_exact(tmp_path):
    path = tmp_path / "b.db"
    with Buffer(path, ALLTYPES, strict=True) as buf:
        buf.append(
            E,
            {
                "id": hostile.StrSubRaises("a"),
                "s": hostile.IntSubRaises(7),
                "i": hostile.IntSubLies(5),
                "f": np.float64(1.5),
                "b": np.True_,
                "n": np.int64(3),
                "money": np.int32(2),
            },
        )
        buf.append(E, {"id": "np", "i": np.int64(-4), "f": np.float32(0.5), "ts": np.float64(1.7e9)})
        buf.append(E, {"id": "tz", "ts": hostile.dt.datetime(2026, 1, 1, tzinfo=hostile.RaisingTz("none"))})
        buf.append(E, hostile.KeysRaise(id="k"))
        with pytest.raises(ValidationError, match="got numpy.bool"):
            buf.append(E, {"id": "x", "i": np.True_})
        with pytest.raises(ValidationError, match="got numpy.str_|expected INTEGER"):
            buf.append(E, {"id": "x", "i": np.str_("x")})
        rows = buf.peek(E, 10)
    first = rows[0]
    assert first["id"] == "a" and first["s"] == "7" and first["i"] == 5  # the value, not the lying __index__
    assert first["f"] == 1.5 and first["b"] is True and str(first["n"]) == "3"
    assert rows[1]["i"] == -4 and rows[1]["f"] == 0.5 and rows[1]["ts"].year == 2023
    assert rows[2]["ts"] == hostile.dt.datetime(2026, 1, 1, tzinfo=hostile.dt.timezone.utc)


def test_valid_geographies_pass(tmp_path):
    ok = [
        "POINT(1 2)",
        "point (-180 90)",
        "POINT EMPTY",
        "LINESTRING(0 0, 1 1, 2 0)",
        "POLYGON((0 0, 1 0, 1 1, 0 0))",
        "MULTIPOINT((1 2), (3 4))",
        "MULTIPOINT(1 2, 3 4)",
        "MULTILINESTRING((0 0, 1 1), (2 2, 3 3))",
        "MULTIPOLYGON(((0 0, 1 0, 1 1, 0 0)))",
        "GEOMETRYCOLLECTION(POINT(1 2), LINESTRING(0 0, 1 1))",
        "GEOMETRYCOLLECTION EMPTY",
        '{"type": "Point", "coordinates": [-122.4, 37.8]}',
        '{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}',
        '{"type": "GeometryCollection", "geometries": [{"type": "Point", "coordinates": [1, 2, 30]}]}',
    ]
    with Buffer(tmp_path / "b.db", ALLTYPES, strict=True) as buf:
        for g in ok:
            buf.append(E, {"id": "g", "g": g})
        assert buf.stats()["pending"] == len(ok)


def test_out_of_range_timestamps_never_reach_the_file_and_peek_reads_the_edges(tmp_path):
    with Buffer(tmp_path / "b.db", ALLTYPES, strict=True) as buf:
        buf.append(E, {"id": "hi", "ts": "9999-12-31T23:59:59.999999Z", "d": "9999-12-31", "dt": "9999-12-31T23:59:59"})
        buf.append(E, {"id": "lo", "ts": "0001-01-01T00:00:00Z", "d": "0001-01-01", "dt": "0001-01-01T00:00:00"})
        for v in (
            "9999-12-31T23:59:59-00:01",
            "0001-01-01T00:00:00+00:01",
            -62135596800001,
            253402300800000,
            "253402300800000",
            1e16,
        ):
            with pytest.raises(ValidationError, match="out of range"):
                buf.append(E, {"id": "x", "ts": v})
        rows = buf.peek(E)
    assert [r["ts"].year for r in rows] == [9999, 1]


# -- 4. limits that bad input cannot get around --------------------------------


def test_dead_letters_count_against_the_cap_and_their_reasons_are_bounded(tmp_path, caplog):
    path = tmp_path / "b.db"
    huge = "7" * 50_000_000
    with Buffer(path, ALLTYPES, max_bytes=1_000_000, on_full="drop", durability="normal") as buf:
        with caplog.at_level(logging.DEBUG, logger="bqspool"):
            ids = [buf.append(E, {"id": "x", "i": huge, "s": "y" * 300_000}) for _ in range(20)]
        stats = buf.stats()
    assert os.path.getsize(path) < 5_000_000
    kept = dead_rows(path)
    assert 1 <= len(kept) < 20 and ids.count(None) == 20 - len(kept)  # past the cap the dead letter is dropped
    assert all(len(r[3]) < 500 and r[2].startswith("[clipped]") for r in kept)
    assert stats["dropped"] == 20 - len(kept)
    assert stats["pending_bytes"] + stats["dead_bytes"] <= 1_000_000
    assert stats["dead_bytes"] == sum(len(r[2]) + len(r[3]) for r in kept)
    assert max(len(r.getMessage()) for r in caplog.records) < 2000


def test_dead_letters_fill_the_cap_under_raise_and_purge_makes_room(tmp_path):
    path = tmp_path / "b.db"
    with Buffer(path, ALLTYPES, max_bytes=200_000, on_full="raise", durability="normal") as buf:
        from bqspool.buffer import BufferFullError

        with pytest.raises(BufferFullError):
            for _ in range(100):
                buf.append(E, {"id": "x", "i": "z" * 10_000})
        with pytest.raises(BufferFullError):
            buf.append(E, {"id": "good", "s": "y" * 20_000})  # good events wait behind the dead letters too
        assert buf.purge_dead_letters(everything=True) > 0
        assert buf.stats()["dead_bytes"] == 0
    with Buffer(path, ALLTYPES, max_bytes=200_000, on_full="raise") as buf:
        assert buf.append(E, GOOD)


def test_no_value_is_logged_above_debug(tmp_path, caplog):
    secret = "Authorization: Bearer SECRET"
    with caplog.at_level(logging.DEBUG):
        with Buffer(tmp_path / "b.db", ALLTYPES, durability="normal") as buf:
            buf.append(E, {"id": "x", "i": secret})
            buf.append(E, {"id": "x", "ts": secret})
            buf.append(E, {"id": "x", secret: 1})
            buf.append_many(E, [{"id": "y", "b": secret}, GOOD])
            buf.append(secret, GOOD)
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert loud and not [m for m in loud if "SECRET" in m]
    assert any("SECRET" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


def test_identifiers_with_a_trailing_newline_are_refused(tmp_path):
    from bqspool.schemas.errors import SchemaError

    good_table = {"fields": [{"name": "id", "type": "STRING"}]}
    for name, table in [
        ("tbl\n", good_table),
        ("tbl", {"fields": [{"name": "user_id\n", "type": "STRING"}]}),
        ("tbl", {"fields": [{"name": "id", "type": "STRING"}], "labels": {"x\n": "y"}}),
        ("tbl", {"fields": [{"name": "id", "type": "STRING"}], "labels": {"x": "y\n"}}),
    ]:
        d = tmp_path / f"set{abs(hash(repr((name, table))))}"
        d.mkdir()
        (d / f"{name}.json").write_text(json.dumps(table))
        with pytest.raises(SchemaError):
            load_schema_set(d)


# -- 5. the buffer file under a hostile host ------------------------------------

_OPEN_WITH_FEW_FDS = r"""
import os, resource, sys
from bqspool.buffer import Buffer
from bqspool.schemas.errors import BufferUnavailableError
path, spare = sys.argv[1], int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
for fd in held[len(held) - spare:]:
    os.close(fd)
try:
    Buffer(path, None).close()
    print("opened")
except BufferUnavailableError as exc:
    print("unavailable", exc)
"""


def test_running_out_of_file_descriptors_never_moves_a_healthy_buffer(tmp_path):
    path = tmp_path / "b.db"
    with Buffer(path, ALLTYPES) as buf:
        ids = buf.append_many(E, [good(i) for i in range(50)])
        outcomes = set()
        for spare in range(0, 6):
            res = subprocess.run(
                [sys.executable, "-c", _OPEN_WITH_FEW_FDS, str(path), str(spare)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert res.returncode == 0, res.stderr
            outcomes.add(res.stdout.split()[0])
        buf.append(E, GOOD)  # the other worker's buffer is still the real file
    assert "unavailable" in outcomes
    assert not list(tmp_path.glob("*corrupt*"))
    assert set(ids) <= set(file_ids(path)) and sum(file_ids(path).values()) == 51


def test_a_buffer_on_a_read_only_filesystem_is_left_alone(small_tmpfs):
    path = small_tmpfs / "b.db"
    with Buffer(path, ALLTYPES) as buf:
        buf.append(E, GOOD)
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    with pytest.raises(BufferUnavailableError, match="left as it is"):
        Buffer(path, ALLTYPES)
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["b.db", "b.db.inuse", "b.db.lock", "b.db.reserve"]
    subprocess.run(["mount", "-o", "remount,rw", str(small_tmpfs)], check=True)
    assert sum(file_ids(path).values()) == 1


def test_a_corrupt_file_held_open_by_another_process_is_not_moved(tmp_path):
    path = tmp_path / "b.db"
    holder = Buffer(path, ALLTYPES)
    holder.append(E, GOOD)
    with open(path, "r+b") as fh:
        fh.write(b"this is not an SQLite header")
    try:
        with pytest.raises(BufferFormatError, match="another process still has it open"):
            Buffer(path, ALLTYPES)
        assert not list(tmp_path.glob("*corrupt*"))
    finally:
        holder.close()
    with Buffer(path, ALLTYPES) as buf:  # nobody holds it now: moved aside, fresh start
        moved = buf.stats()["recovered_from"]
    assert moved and os.path.exists(moved)
    with Buffer(path, None) as other:  # every process sees the move, not just the one that made it
        assert other.stats()["recovered_from"] == moved


@pytest.mark.parametrize("which", ["buffer", "lock"])
def test_symlinks_are_refused(tmp_path, which):
    path = tmp_path / "b.db"
    target = tmp_path / "elsewhere" / "target"
    target.parent.mkdir()
    link = path if which == "buffer" else path.with_name("b.db.lock")
    os.symlink(target, link)  # dangling
    with pytest.raises(ConfigError, match="symlink"):
        Buffer(path, ALLTYPES)
    assert not target.exists()


# -- 6. a Hypothesis property over hostile events -------------------------------

# Values up to the row size limit: past it, encoding a string costs what
# copying it costs (50 MB: 60 ms), which the CPU bound does not cover.
_PARTS = [v for _, _, v in hostile.HOSTILE_VALUES[:-1] if not (type(v) is str and len(v) > 10 * 2**20)] + [
    hostile.RaisingRepr(),
    hostile.IntSubRaises(3),
    "\udcff",
    2**64,
    -(2**63) - 1,
    float("nan"),
    float("inf"),
    1e308,
    -0.0,
    b"\xff",
    bytearray(b"x"),
    {1, 2},
    (),
    [],
    {},
    None,
    True,
    "",
    " ",
    "9" * 30,
    "1e308",
    "-1e-400",
    10**18,
    1.5e17,
]


def _part(index: int):
    """A part by index: sampled_from would hash the parts, and some raise when asked.
    A named function, not ``_PARTS.__getitem__``: Hypothesis prints a map's
    function, and the list's repr holds an int too long to print."""
    return _PARTS[index]


_parts = st.integers(0, len(_PARTS) - 1).map(_part)
# Every column of the table, and names no table has.
_COLUMNS = [f.name for f in load_schema_set(ALLTYPES)["everything"].user_fields]
_fields = st.sampled_from([*_COLUMNS, "\udcff", "", "x" * 300])
hostile_events = st.one_of(
    st.dictionaries(_fields, _parts, max_size=4),
    st.dictionaries(st.sampled_from([1, None, (1,), hostile.EqRaisesKey("id")]), _parts, max_size=2),
    _parts,
    st.builds(lambda d: hostile.LenLies(d), st.dictionaries(_fields, _parts, max_size=2)),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(events=st.lists(hostile_events, min_size=1, max_size=4), strict=st.booleans())
def test_hostile_events_never_cost_good_ones(tmp_path_factory, events, strict):
    path = tmp_path_factory.mktemp("h") / "b.db"
    with Buffer(path, ALLTYPES, strict=strict, durability="normal", flush_interval=0.5) as buf:
        ids = [buf.append(E, good(i), wait=False) for i in range(10)]
        for event in events:
            # This thread's CPU only: the writer's thread may commit meanwhile.
            start = time.thread_time()
            try:
                got = buf.append(E, event, wait=False)
            except ValidationError:
                got = "raised"
            assert time.thread_time() - start < 0.05
            assert got  # an id, or a bqspool error: never None, never a raw exception
        ids += [buf.append(E, good(i + 10)) for i in range(3)]
        buf.flush()
        assert buf.stats()["process"]["lost"] == 0
    assert set(ids) <= set(file_ids(path))
    with Buffer(path, ALLTYPES) as buf:  # still usable
        assert buf.append(E, GOOD)
