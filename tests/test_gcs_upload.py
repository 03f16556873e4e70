"""Multipart uploads streamed from their file: one request up to MULTIPART_MAX, never the file in memory."""

from __future__ import annotations

import email.parser
import json
import os

import pytest
from bqspool.loader.backends.gcs import crc32c_of
from bqspool.loader.backends.gcs_upload import CHUNK, MultipartBody

from .counting_proxy import CountingProxy
from .test_gcs_media import _store


def test_the_body_is_the_resource_then_the_bytes_read_a_chunk_at_a_time(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(3 * CHUNK + 17))
    body = MultipartBody("a/b.parquet", path, "crc==", {"k": "v"})
    chunks = list(body)
    assert len(body) == sum(map(len, chunks))
    assert max(len(c) for c in chunks[1:-1]) == CHUNK  # the file, never whole
    raw = b"".join(chunks)
    message = email.parser.BytesParser().parsebytes(f"Content-Type: {body.content_type}\r\n\r\n".encode() + raw)
    resource, data = (part.get_payload(decode=True) for part in message.get_payload())
    assert json.loads(resource) == {
        "name": "a/b.parquet", "crc32c": "crc==", "contentType": "application/octet-stream", "metadata": {"k": "v"},
    }  # fmt: skip
    assert data == path.read_bytes()
    assert list(body) == chunks  # a retry reads the file again


def test_a_file_that_changes_while_sent_is_an_error_not_a_wrong_length(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * (CHUNK + 10))
    body = MultipartBody("n", path, "c", {})
    sent = iter(body)
    next(sent)
    path.write_bytes(b"x" * 5)
    with pytest.raises(OSError, match="changed while it was uploaded"):
        list(sent)


def test_a_16_mib_file_goes_up_in_one_request_and_arrives_whole(stack, tmp_path, monkeypatch):
    proxy = CountingProxy(os.environ["STORAGE_EMULATOR_HOST"])
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        store = _store()
        path = tmp_path / "big.bin"
        path.write_bytes(os.urandom(16 * 1024 * 1024))
        name = f"test/upload/{tmp_path.name}/big.bin"
        stored = store.upload(name, path, {"bqspool-events": "7"})
        assert proxy.snapshot() == {"insert": 1}  # no lookup first, no resumable session
        assert stored.size == path.stat().st_size and stored.checksum == crc32c_of(path)
        assert store.read_bytes(name) == path.read_bytes()
        assert store.upload(name, path).size == stored.size  # again: a 412, the same bytes
        assert store.stat(name).metadata == {"bqspool-events": "7"}
    finally:
        proxy.close()
