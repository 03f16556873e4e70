"""An object store in memory, with generations and strongly consistent listings."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bqspool.schemas.errors import BackendError, ObjectConflictError, PreconditionFailedError

from ..billing import RequestCounts
from ..interfaces import LifecycleRule, ObjectData, StoredObject
from ..retry import RetryPolicy
from .faults import Calls, FaultKnobs

T = TypeVar("T")


def _checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


@dataclass
class _Meta:
    generation: int
    created: float
    updated: float
    metadata: dict[str, str] = field(default_factory=dict)


class MemoryObjectStore:
    """An object store in a dict, with generations and strongly consistent listings.

    Faults: ``knobs`` (:class:`~.faults.FaultKnobs`); :meth:`put` plants an
    object (the same bytes or others) under a name. ``requests`` counts
    what each call would send to GCS (a read is a metadata get and a
    download, a move a copy and a delete). ``clock`` is the store's clock:
    the times it reports, and :meth:`now`.
    """

    def __init__(
        self,
        bucket: str = "fake-bucket",
        *,
        knobs: FaultKnobs | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ):
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}
        self.meta: dict[str, _Meta] = {}
        self.knobs = knobs or FaultKnobs()
        self.requests = RequestCounts()
        self._calls = Calls(self.knobs, retry, sleep)
        self.clock = clock
        self._generation = 0
        self.lifecycle: list[LifecycleRule] = []
        # The options a configuration gives (``clients.configure``), and each write with those it carried.
        self.key_of: Callable[[str], str | None] = lambda name: None
        self.principal: str | None = None
        self.recorded: list[dict] = []  # {"call", "name", "kms_key", "principal"}, as GCS would be asked
        self._lock = threading.Lock()  # committers in threads share one store in tests

    def uri(self, name: str) -> str:
        return f"mem://{self.bucket}/{name}"

    def now(self) -> float:
        return self.clock()

    def _call(self, what: str, ops: tuple[str, ...], fn: Callable[[], T]) -> T:
        def counted() -> T:
            for op in ops:
                self.requests.add(op)
            return fn()

        return self._calls.call(what, counted)

    def put(self, name: str, data: bytes, metadata: Mapping[str, str] | None = None) -> StoredObject:
        """Plant ``data`` under ``name`` (no precondition, not counted)."""
        with self._lock:
            return self._put(name, data, metadata)

    def _put(self, name: str, data: bytes, metadata: Mapping[str, str] | None = None) -> StoredObject:
        self._generation += 1
        now = self.clock()
        self.objects[name] = data
        self.meta[name] = _Meta(self._generation, now, now, dict(metadata or {}))
        return self._info(name)

    def _record(self, call: str, name: str) -> None:
        self.recorded.append({"call": call, "name": name, "kms_key": self.key_of(name), "principal": self.principal})

    def _info(self, name: str) -> StoredObject:
        data, m = self.objects[name], self.meta[name]
        return StoredObject(
            name, len(data), _checksum(data), m.generation, m.created, "STANDARD", m.updated, m.metadata
        )

    def read_uri(self, uri: str) -> bytes:
        return self.objects[uri.removeprefix(f"mem://{self.bucket}/")]

    def upload(self, name: str, path: Path, metadata: Mapping[str, str] | None = None) -> StoredObject:
        def attempt() -> StoredObject:
            data = Path(path).read_bytes()
            with self._lock:
                existing = self.objects.get(name)
                if existing is not None and existing != data:
                    raise ObjectConflictError(
                        f"{self.uri(name)} exists with other content ({len(existing)} bytes, "
                        f"checksum {_checksum(existing)}); expected {len(data)} bytes, "
                        f"checksum {_checksum(data)}"
                    )
                if existing is not None:
                    return self._info(name)
                self._record("upload", name)
                return self._put(name, data, metadata)

        return self._call(f"upload {name}", ("insert",), attempt)

    def list_objects(self, prefix: str, start_offset: str | None = None) -> list[StoredObject]:
        def attempt() -> list[StoredObject]:
            with self._lock:
                found = [
                    self._info(n)
                    for n in sorted(self.objects)
                    if n.startswith(prefix) and (start_offset is None or n >= start_offset)
                ]
            for _ in range(len(found) // 1000):  # a page per 1,000, the first counted below
                self.requests.add("list")
            return found

        return self._call(f"list {prefix}", ("list",), attempt)

    def stat(self, name: str) -> StoredObject | None:
        def attempt() -> StoredObject | None:
            with self._lock:
                return self._info(name) if name in self.objects else None

        return self._call(f"stat {name}", ("get",), attempt)

    def read_object(self, name: str) -> ObjectData | None:
        def attempt() -> ObjectData | None:
            with self._lock:
                if name not in self.objects:
                    return None
                self.requests.add("read")
                m = self.meta[name]
                return ObjectData(self.objects[name], m.generation, m.updated)

        return self._call(f"read {name}", ("get",), attempt)

    def write_object(
        self, name: str, data: bytes, if_generation_match: int, metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        def attempt() -> StoredObject:
            with self._lock:
                have = self.meta[name].generation if name in self.objects else 0
                if have != if_generation_match:
                    raise PreconditionFailedError(
                        f"{self.uri(name)} is at generation {have}, not {if_generation_match}"
                    )
                self._record("write", name)
                return self._put(name, data, metadata)

        return self._call(f"write {name}", ("insert",), attempt)

    def delete_objects(self, names: Sequence[str]) -> list[bool]:
        def attempt() -> list[bool]:
            with self._lock:
                gone = [self.objects.pop(n, None) is not None and self.meta.pop(n, None) is not None for n in names]
            return gone

        return self._call(f"delete {len(names)} objects", ("delete",) * len(names), attempt)

    def move_object(self, name: str, to: str) -> bool:
        def attempt() -> bool:
            with self._lock:
                if name not in self.objects:
                    if to not in self.objects:
                        raise BackendError(f"cannot move {self.uri(name)}: neither it nor {self.uri(to)} exists")
                    return False
                if to not in self.objects:
                    self._record("copy", to)
                    self._put(to, self.objects[name], self.meta[name].metadata)
                del self.objects[name], self.meta[name]
                return True

        return self._call(f"move {name}", ("copy", "delete"), attempt)

    def move_objects(self, moves: Sequence[tuple[str, str]]) -> list[bool]:
        return [self.move_object(name, to) for name, to in moves]

    def download(self, name: str, path: Path) -> None:
        Path(path).write_bytes(self.read_bytes(name))

    def read_bytes(self, name: str) -> bytes:
        def attempt() -> bytes:
            with self._lock:
                data = self.objects.get(name)
            if data is None:
                raise BackendError(f"{self.uri(name)} does not exist")
            return data

        return self._call(f"download {name}", ("read",), attempt)

    def copy_object(self, name: str, to: str) -> bool:
        def attempt() -> bool:
            with self._lock:
                if name not in self.objects:
                    raise BackendError(f"cannot copy {self.uri(name)}: it does not exist")
                if to in self.objects:
                    return False
                self.requests.add("copy")
                self._record("copy", to)
                self._put(to, self.objects[name], self.meta[name].metadata)
                return True

        return self._call(f"copy {name}", ("get",), attempt)

    def set_lifecycle(self, rules: list[LifecycleRule]) -> list[LifecycleRule]:
        self.requests.add("patch")
        self.lifecycle = list(rules)
        return list(self.lifecycle)
