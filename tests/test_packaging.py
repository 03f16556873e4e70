"""The distribution installs three packages under bqspool/ and nothing else at top level."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_three_packages_under_bqspool(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("bqspool-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top - {"bqspool"} == {next(t for t in top if t.endswith(".dist-info"))}
    for pkg in ("buffer", "loader", "schemas"):
        assert f"bqspool/{pkg}/__init__.py" in names
    assert "bqspool/__init__.py" not in names  # a namespace: apps' own modules can't collide
    assert "bqspool/schemas/sets/leafloaf/order_events.json" in names
    assert "bqspool/schemas/sets/eixa/tasks.json" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "bqspool = bqspool.loader.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_writer_import_stays_light():
    code = (
        "import sys; from bqspool.buffer import Buffer; "
        "heavy = [m for m in ('pyarrow', 'google', 'google.cloud', 'apscheduler', 'click') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
