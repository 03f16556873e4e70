"""The distribution installs three packages under bqspool/ and nothing else at top level,
and the loader's packages keep to their layers."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_three_packages_under_bqspool(tmp_path):
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-v",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    # Every folder of data is declared: setuptools warned four times about the schema sets.
    assert "is absent from the `packages` configuration" not in built.stdout + built.stderr
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


# Google's libraries and HTTP clients: only the loader's backends package may import them.
THIRD_PARTY = ("google", "requests", "urllib3", "httpx", "aiohttp")
CLOUD = (*THIRD_PARTY, "http.client", "urllib.request")  # a server (http.server) is the status page's


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def test_only_the_backends_package_imports_a_cloud_sdk_or_an_http_client():
    outside = [p for p in sorted((ROOT / "loader").rglob("*.py")) if "backends" not in p.relative_to(ROOT).parts]
    outside += sorted((ROOT / "buffer").rglob("*.py")) + sorted((ROOT / "schemas").rglob("*.py"))
    assert len(outside) > 60  # every package but one, not a list of names
    found = {
        str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.split(".")[0] in CLOUD or m in CLOUD)
        for p in outside
    }
    assert {f: m for f, m in found.items() if m} == {}
    inside = sorted((ROOT / "loader" / "backends").rglob("*.py"))
    assert any(any(m.startswith("google") for m in _imports(p)) for p in inside)  # the check sees imports


def test_every_module_outside_the_backends_imports_with_google_and_http_clients_blocked():
    code = (
        "import pkgutil, sys\n"
        f"CLOUD = {THIRD_PARTY!r}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if any(name == c or name.startswith(c + '.') for c in CLOUD):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import bqspool.buffer, bqspool.schemas, bqspool.loader\n"
        "names = [m.name for m in pkgutil.walk_packages(bqspool.loader.__path__, 'bqspool.loader.')\n"
        "         if not m.name.startswith('bqspool.loader.backends')]\n"
        "for name in names:\n"
        "    __import__(name)\n"
        "print(len(names))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "tests")
    assert res.returncode == 0, res.stderr
    assert int(res.stdout) > 50


def test_no_module_passes_400_lines_and_no_function_60():
    long_modules, long_functions = [], []
    for pkg in ("buffer", "loader", "schemas"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            text = path.read_text()
            if text.count("\n") > 400:
                long_modules.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > 60:
                        long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
    assert long_modules == []
    assert long_functions == []
