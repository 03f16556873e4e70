"""An object store in memory, with generations and strongly consistent listings."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bqspool.schemas.errors import BackendError, ObjectConflictError, PreconditionFailedError

from ..interfaces import LifecycleRule, StoredObject
from ..retry import RetryPolicy
from .faults import Calls, FaultKnobs


def _checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


class MemoryObjectStore:
    """An object store in a dict, with generations and strongly consistent listings.

    Faults: ``knobs`` (:class:`~.faults.FaultKnobs`); :meth:`put` plants an
    object (the same bytes or others) under a name.
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
        self.meta: dict[str, tuple[int, float]] = {}  # name -> (generation, created)
        self.knobs = knobs or FaultKnobs()
        self._calls = Calls(self.knobs, retry, sleep)
        self.clock = clock
        self._generation = 0
        self.lifecycle: list[LifecycleRule] = []
        self._lock = threading.Lock()  # committers in threads share one store in tests

    def uri(self, name: str) -> str:
        return f"mem://{self.bucket}/{name}"

    def put(self, name: str, data: bytes) -> StoredObject:
        with self._lock:
            self._generation += 1
            self.objects[name] = data
            self.meta[name] = (self._generation, self.clock())
            return self._info(name)

    def _info(self, name: str) -> StoredObject:
        data = self.objects[name]
        generation, created = self.meta[name]
        return StoredObject(name, len(data), _checksum(data), generation, created)

    def read_uri(self, uri: str) -> bytes:
        return self.objects[uri.removeprefix(f"mem://{self.bucket}/")]

    def upload(self, name: str, path: Path) -> StoredObject:
        def attempt() -> StoredObject:
            data = Path(path).read_bytes()
            existing = self.objects.get(name)
            if existing is not None and existing != data:
                raise ObjectConflictError(
                    f"{self.uri(name)} exists with other content ({len(existing)} bytes, "
                    f"checksum {_checksum(existing)}); expected {len(data)} bytes, "
                    f"checksum {_checksum(data)}"
                )
            return self._info(name) if existing is not None else self.put(name, data)

        return self._calls.call(f"upload {name}", attempt)

    def list_objects(self, prefix: str) -> list[StoredObject]:
        def attempt() -> list[StoredObject]:
            with self._lock:
                return [self._info(n) for n in sorted(self.objects) if n.startswith(prefix)]

        return self._calls.call(f"list {prefix}", attempt)

    def read_object(self, name: str) -> tuple[bytes, int] | None:
        def attempt() -> tuple[bytes, int] | None:
            with self._lock:
                if name not in self.objects:
                    return None
                return self.objects[name], self.meta[name][0]

        return self._calls.call(f"read {name}", attempt)

    def write_object(self, name: str, data: bytes, if_generation_match: int) -> StoredObject:
        def attempt() -> StoredObject:
            with self._lock:
                have = self.meta[name][0] if name in self.objects else 0
                if have != if_generation_match:
                    raise PreconditionFailedError(
                        f"{self.uri(name)} is at generation {have}, not {if_generation_match}"
                    )
                self._generation += 1
                self.objects[name] = data
                self.meta[name] = (self._generation, self.clock())
                return self._info(name)

        return self._calls.call(f"write {name}", attempt)

    def move_object(self, name: str, to: str) -> bool:
        def attempt() -> bool:
            with self._lock:
                if name not in self.objects:
                    if to not in self.objects:
                        raise BackendError(f"cannot move {self.uri(name)}: neither it nor {self.uri(to)} exists")
                    return False
                if to not in self.objects:
                    self._generation += 1
                    self.objects[to] = self.objects[name]
                    self.meta[to] = (self._generation, self.clock())
                del self.objects[name], self.meta[name]
                return True

        return self._calls.call(f"move {name}", attempt)

    def move_objects(self, moves: Sequence[tuple[str, str]]) -> list[bool]:
        return [self.move_object(name, to) for name, to in moves]

    def download(self, name: str, path: Path) -> None:
        def attempt() -> None:
            if name not in self.objects:
                raise BackendError(f"{self.uri(name)} does not exist")
            Path(path).write_bytes(self.objects[name])

        self._calls.call(f"download {name}", attempt)

    def copy_object(self, name: str, to: str) -> bool:
        def attempt() -> bool:
            with self._lock:
                if name not in self.objects:
                    raise BackendError(f"cannot copy {self.uri(name)}: it does not exist")
                if to in self.objects:
                    return False
                self._generation += 1
                self.objects[to] = self.objects[name]
                self.meta[to] = (self._generation, self.clock())
                return True

        return self._calls.call(f"copy {name}", attempt)

    def set_lifecycle(self, rules: list[LifecycleRule]) -> list[LifecycleRule]:
        self.lifecycle = list(rules)
        return list(self.lifecycle)
