from pathlib import Path

import pytest
from bqspool.buffer import Buffer
from bqspool.schemas import load_schema_set


@pytest.fixture(scope="session")
def leafloaf():
    return load_schema_set("leafloaf")


@pytest.fixture(scope="session")
def eixa():
    return load_schema_set("eixa")


@pytest.fixture
def buffer_path(tmp_path):
    return tmp_path / "spool" / "buffer.db"


@pytest.fixture
def buf(buffer_path):
    with Buffer(buffer_path, "eixa", durability="normal") as b:
        yield b


def interaction(**over):
    event = {
        "user_id": "u1",
        "interaction_id": "i1",
        "timestamp": "2026-11-24T10:00:00Z",
        "message_in": "hello",
        "intent": "chat",
        "duration_ms": 12,
    }
    event.update(over)
    return event


ALLTYPES = Path(__file__).with_name("data") / "alltypes"


@pytest.fixture(scope="session")
def alltypes():
    return load_schema_set(ALLTYPES)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """The real local stack (fake-gcs-server + BigQuery emulator), once per session."""
    import os

    from bqspool.loader.backends import localstack

    folder = tmp_path_factory.mktemp("stack")
    state = localstack.up(folder)
    saved = {k: os.environ.get(k) for k in state.env()}
    os.environ.update(state.env())
    yield {"folder": folder, "state": state}
    localstack.down(folder)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 6 MiB tmpfs of our own (the tests run as root), unmounted afterwards."""
    import subprocess

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)
