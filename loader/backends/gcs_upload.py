"""The body of a multipart upload, read from its file as it is sent.

A multipart upload is one request: the object's resource (its name, the
crc32c GCS checks the bytes against, its metadata) and its bytes, as
``multipart/related``. bqspool writes it itself rather than through the
client, which reads the file, computes its crc32c again and builds the body
through more copies. The bytes are read from the file 1 MiB at a time while
requests sends them, so a file of tens of MiB goes up in one request without
being held in memory; each attempt reads the file again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

CHUNK = 1 << 20


class MultipartBody:
    """``multipart/related``: the resource as JSON, then the file's bytes. An iterable with
    a length, so requests sends it with a Content-Length, chunk by chunk, as it is."""

    def __init__(self, name: str, path: Path, crc32c: str, metadata: Mapping[str, str]):
        self.path, self.size = path, path.stat().st_size
        self.boundary = uuid.uuid4().hex
        resource: dict = {"name": name, "crc32c": crc32c, "contentType": "application/octet-stream"}
        if metadata:
            resource["metadata"] = dict(metadata)
        self.head = (
            f"--{self.boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json.dumps(resource)}\r\n"
            f"--{self.boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def content_type(self) -> str:
        return f'multipart/related; boundary="{self.boundary}"'

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        sent = 0
        with open(self.path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                sent += len(chunk)
                yield chunk
        if sent != self.size:  # the file changed under us: the length sent would be wrong
            raise OSError(f"{self.path} changed while it was uploaded ({sent} bytes, not {self.size})")
        yield self.tail
