"""Reading objects' bytes through the storage client's own pool, on the real local stack.

The reads bypass requests' Session (see bqspool.loader.backends.gcs_media), so
each thing the session did for them is checked here against the wire: the
bytes and their crc32c, the count of each attempt, the retries, a refreshed
token, and the proxy the environment names. A counting proxy in front of
fake-gcs-server stands on the other side of the wire and makes the faults
the server can't (a 401, a 503, a byte flipped in transit).
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from bqspool.loader.clients import make_object_store
from bqspool.loader.config import load_config
from bqspool.schemas.errors import BackendError, BqspoolError

from .counting_proxy import CountingProxy

DATA = bytes(range(256)) * 300  # 75 KiB: more than one chunk of the socket's reads


@pytest.fixture
def proxy(stack):
    found = CountingProxy(os.environ["STORAGE_EMULATOR_HOST"])
    yield found
    found.close()


def _store(**over):
    settings = {"retry_initial": 0.01, "retry_maximum": 0.05, "retry_deadline": 5.0, **over}
    config = replace(load_config(env=os.environ), **settings)
    return make_object_store(config)


@pytest.fixture
def stored(stack, tmp_path):
    """An object's name on the stack, holding DATA."""
    path = tmp_path / "object.bin"
    path.write_bytes(DATA)
    name = f"test/media/{tmp_path.name}/object.bin"
    _store().upload(name, path)
    return name


def test_an_object_is_read_whole_into_memory_and_onto_disk(proxy, stored, tmp_path, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    store = _store()
    assert store.read_bytes(stored) == DATA
    store.download(stored, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == DATA
    assert store.requests.snapshot() == proxy.snapshot() == {"read": 2}


def test_a_missing_object_is_a_backend_error_that_names_it(proxy, stack, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    store = _store()
    with pytest.raises(BackendError, match="test/media/none.bin does not exist"):
        store.read_bytes("test/media/none.bin")
    assert proxy.snapshot() == {"read": 1}  # a 404 is an answer, not retried


@pytest.mark.parametrize("fault", [503, 429, "corrupt"])
def test_a_transient_fault_is_read_again_and_each_attempt_counted(proxy, stored, monkeypatch, fault):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    store = _store()
    proxy.read_faults = [fault, fault]
    assert store.read_bytes(stored) == DATA
    assert store.requests.snapshot() == proxy.snapshot() == {"read": 3}


def test_a_fault_that_outlasts_the_retries_is_raised(proxy, stored, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    store = _store(retry_deadline=0.3)
    proxy.read_faults = ["corrupt"] * 1000
    with pytest.raises(BqspoolError, match="unavailable after retries") as raised:
        store.read_bytes(stored)
    assert "crc32c" in str(raised.value.__cause__)
    assert proxy.snapshot()["read"] > 1


class _Token:
    """Credentials whose token the test sees refreshed: the stack takes anonymous calls only,
    so a 401 and a refresh are made by the proxy and by this."""

    def __init__(self):
        self.token, self.refreshed = "first", 0

    def before_request(self, request, method, url, headers):
        headers["authorization"] = f"Bearer {self.token}"

    def refresh(self, request):
        self.refreshed += 1
        self.token = f"fresh-{self.refreshed}"


def test_an_expired_token_is_refreshed_once_and_the_read_made_again(proxy, stored, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    store = _store()
    reader = store._reader()
    reader.credentials = token = _Token()
    proxy.read_faults = [401]
    assert store.read_bytes(stored) == DATA
    assert token.refreshed == 1
    assert proxy.snapshot() == {"read": 2}
    sent = [t for m, t, _ in proxy.seen if m == "GET"]
    assert len(sent) == 2
    proxy.read_faults = [401, 401]  # refused again with a fresh token: an error, no loop
    with pytest.raises(BqspoolError):
        store.read_bytes(stored)
    assert token.refreshed == 2


def test_the_proxy_the_environment_names_carries_every_request(proxy, stored, tmp_path, monkeypatch):
    """Read once, when the client is made: listings and reads both go through it."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    store = _store()
    monkeypatch.delenv("HTTP_PROXY")  # what the process started with is what it keeps
    assert [o.name for o in store.list_objects(stored)] == [stored]
    assert store.read_bytes(stored) == DATA
    seen = proxy.snapshot()
    assert seen["list"] == seen["read"] == 1
    assert store.requests.snapshot() == seen  # whatever the store sent went through the proxy
    assert all(t.startswith("http://") for _, t, _ in proxy.seen)  # a proxy's request names the whole URL


def test_no_proxy_keeps_the_endpoint_direct(proxy, stored, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    store = _store()
    assert store.read_bytes(stored) == DATA
    assert [o.name for o in store.list_objects(stored)] == [stored]
    assert proxy.snapshot() == {}
