"""Archive files merged while their load jobs run: used when the job is done, never written otherwise.

On the fakes (the decisions); the real stack runs the same path in every
exactly-once test, and tests/test_loader_crash.py kills it at each step.
"""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest
from bqspool.loader.archived import SOURCES_KEY
from bqspool.loader.commit import archiver
from bqspool.loader.interfaces import JobError
from bqspool.schemas.errors import BackendUnavailableError

from .test_drain_logic import exactly_once, rig  # noqa: F401  (the fixture)


def archive_rows(rig) -> dict[str, int]:  # noqa: F811
    """Archive file name -> its rows."""
    return {
        name: pq.read_metadata(io.BytesIO(data)).num_rows
        for name, data in rig.store.objects.items()
        if "/archive/" in name and name.endswith(".parquet")
    }


def test_a_merge_ahead_that_failed_is_done_again_when_archiving(rig, monkeypatch):  # noqa: F811
    appended = rig.fill({"tasks": 20})
    merge = archiver.Archiver._merge
    calls = []

    def failing_once(self, part, folder):
        calls.append(part.path)
        if len(calls) == 1:
            raise OSError("disk full while merging ahead")
        return merge(self, part, folder)

    monkeypatch.setattr(archiver.Archiver, "_merge", failing_once)
    rig.drainer(batch_rows=5).drain_once()
    exactly_once(rig, appended)
    assert len(calls) == 2 and calls[0] == calls[1]  # ahead (failed), then again at archiving
    assert sum(archive_rows(rig).values()) == 20


def test_a_job_that_fails_leaves_no_archive_file_although_merged_ahead(rig):  # noqa: F811
    appended = rig.fill({"tasks": 10})
    rig.warehouse.knobs.job_errors = [JobError("backend", "backendError", "down")] * 10
    with pytest.raises(BackendUnavailableError, match="failed 5 times"):
        rig.drainer(batch_rows=5).drain_once()
    assert archive_rows(rig) == {}  # merged ahead five times; written never
    rig.warehouse.knobs.job_errors = []
    rig.drainer(batch_rows=5).drain_once()
    exactly_once(rig, appended)
    rows = archive_rows(rig)
    assert sum(rows.values()) == 10
    held = [k for name in rows for k in rig.store.meta[name].metadata.get(SOURCES_KEY, "").split(",") if k]
    assert len(held) == len(set(held)) == 2  # both objects, each in the archive once


def test_a_commit_says_how_far_its_load_jobs_are(rig, monkeypatch, caplog):  # noqa: F811
    """A commit's progress: a bar on a terminal, else a log line (here at every step)."""
    import logging

    from bqspool.loader import progress

    monkeypatch.setitem(progress.Progress.__init__.__kwdefaults__, "every_s", 0.0)
    appended = rig.fill({"tasks": 20, "user_interactions": 10})
    drainer = rig.drainer(batch_rows=5, progress=True)
    with caplog.at_level(logging.INFO, logger="bqspool.loader"):
        drainer.drain_once()
    exactly_once(rig, appended)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loading: ")]
    assert lines and lines[-1].startswith("loading: 6 of 6 objects"), lines
    assert any(r.getMessage().startswith("shipping: ") and "of 30 events" in r.getMessage() for r in caplog.records)


def test_which_objects_are_read_into_memory():
    mib = 1024 * 1024
    part = archiver.Part("a", ("1", "2", "3", "4", "5"), sizes=(10, 2 * mib, mib, 20 * mib, 10))
    assert part.in_memory() == [True, False, True, False, True]  # none over SMALL
    many = archiver.Part("b", tuple(map(str, range(40))), sizes=(mib,) * 40)
    assert many.in_memory() == [True] * 32 + [False] * 8  # at most IN_MEMORY of a part's
    assert archiver.Part("c", ("1", "2")).in_memory() == [False, False]  # sizes unknown: onto disk


@pytest.mark.parametrize("small", [0, 3000, 10**9])
def test_objects_in_memory_and_on_disk_merge_into_the_same_rows(rig, monkeypatch, small):  # noqa: F811
    """Every object on disk, some of each, every one in memory: the same archive."""
    monkeypatch.setattr(archiver, "SMALL", small)
    appended = rig.fill({"tasks": 40})
    report = rig.drainer(batch_rows=3).drain_once()
    exactly_once(rig, appended)
    (name,) = archive_rows(rig)
    table = pq.read_table(io.BytesIO(rig.store.objects[name]))
    assert sorted(table.column("_event_id").to_pylist()) == sorted(appended["tasks"])
    assert report.commit.objects_loaded > 2 and rig.store.requests.snapshot()["read"] == report.commit.objects_loaded


def test_a_commit_says_where_its_time_went(rig):  # noqa: F811
    appended = rig.fill({"tasks": 10})
    report = rig.drainer(batch_rows=5).drain_once()
    exactly_once(rig, appended)
    assert set(report.commit.step_seconds) == {"load_jobs", "archive"}
    assert sum(report.commit.step_seconds.values()) <= report.commit.seconds + 0.01
