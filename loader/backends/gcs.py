"""The Google Cloud Storage adapter of :class:`~.interfaces.ObjectStore`.

Everything GCS-specific stays here: crc32c, preconditions, Google's
exceptions (translated by the retry policy into bqspool's tree).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from bqspool.schemas.errors import BackendError, ObjectConflictError, PreconditionFailedError
from google.api_core import exceptions as gexc
from google.cloud import exceptions as cloud_errors

from ..billing import RequestCounts
from ..interfaces import LifecycleRule, ObjectData, StoredObject
from ..retry import RetryPolicy
from . import gcs_batch
from .gcs_media import MediaReader
from .gcs_upload import MultipartBody
from .meter import Meter


def crc32c_of(path: Path) -> str:
    """The base64 crc32c GCS reports for a file's bytes."""
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode("ascii")


def _epoch(value: str | None) -> float:
    """An RFC 3339 time as GCS writes it, in epoch seconds; 0.0 for none."""
    return datetime.fromisoformat(value).timestamp() if value else 0.0


def _stored(blob) -> StoredObject:
    # The times straight from the resource: the client's accessors parse with strptime,
    # ten times as slow, and a listing of 10,000 objects parses two each.
    props = blob._properties
    return StoredObject(
        blob.name,
        int(blob.size or 0),
        blob.crc32c or "",
        int(blob.generation or 0),
        _epoch(props.get("timeCreated")),
        blob.storage_class or "STANDARD",
        _epoch(props.get("updated")),
        dict(blob.metadata or {}),
    )


def _rules(found) -> list[LifecycleRule]:
    out = []
    for rule in found:
        action, cond = rule.get("action", {}), rule.get("condition", {})
        for prefix in cond.get("matchesPrefix") or [""]:
            if action.get("type") == "Delete":
                out.append(LifecycleRule("delete", int(cond.get("age", 0)), prefix))
            else:
                out.append(
                    LifecycleRule("set-storage-class", int(cond.get("age", 0)), prefix, action.get("storageClass"))
                )
    return out


UPLOAD_CHUNK = 8 * 1024 * 1024  # a multiple of 256 KiB, as resumable uploads require
# Files up to this size go up in one multipart request, streamed from the file (a
# failed attempt sends it again whole); larger ones by a resumable session. A
# 16-MiB batch or a record's archive file is one request, not a lookup and three.
MULTIPART_MAX = 64 * 1024 * 1024


class GcsStore:
    """Idempotent uploads: ``if_generation_match=0``, and a 412 means the
    object is already there, which is fine when size and crc32c match."""

    def __init__(self, client, bucket: str, retry: RetryPolicy):
        self.client = client
        self.bucket_name = bucket
        self.bucket = client.bucket(bucket)
        self.retry = retry
        self.meter = Meter()
        self.meter.install(client)
        # The customer-managed key each object is written with, by name (clients.configure:
        # its table's own, else the configured one); None: Google-managed encryption.
        self.key_of: Callable[[str], str | None] = lambda name: None
        self.principal: str | None = None  # the impersonated service account the client was built with
        # Made at the first download (two threads may each make one: either does).
        self._media: MediaReader | None = None

    @property
    def requests(self) -> RequestCounts:
        return self.meter.requests

    def uri(self, name: str) -> str:
        return f"gs://{self.bucket_name}/{name}"

    def now(self) -> float:
        return self.meter.now()

    def upload(self, name: str, path: Path, metadata: Mapping[str, str] | None = None) -> StoredObject:
        """Create ``name`` from ``path`` with ``if_generation_match=0``; a 412 with
        the same size and crc32c is an earlier attempt of ours (see the interface)."""
        size, crc32c = path.stat().st_size, crc32c_of(path)
        meta = dict(metadata or {})

        def attempt() -> StoredObject:
            if size <= MULTIPART_MAX:
                return self._multipart(name, path, size, crc32c, meta)
            # A file this large goes by a resumable upload, whose precondition
            # fake-gcs-server ignores: look first (and send nothing twice).
            if self._existing(name, size, crc32c):
                return StoredObject(name, size, crc32c)
            # 8 MiB resumable chunks: the client's default reads 100 MiB at a
            # time into memory, which would dominate a drain's footprint.
            blob = self.bucket.blob(name, chunk_size=UPLOAD_CHUNK, kms_key_name=self.key_of(name))
            blob.crc32c = crc32c  # the server verifies what it received
            blob.metadata = meta or None
            try:
                # retry=None: one policy (ours) governs every call.
                blob.upload_from_filename(str(path), if_generation_match=0, checksum="crc32c", retry=None, timeout=60)
            except gexc.PreconditionFailed:
                self._check_existing(name, size, crc32c)
            return StoredObject(name, size, crc32c)

        return self.retry.call(f"upload {self.uri(name)}", attempt)

    def _multipart(self, name: str, path: Path, size: int, crc32c: str, metadata: Mapping[str, str]) -> StoredObject:
        """One multipart upload request (see :mod:`.gcs_upload`): the metadata, with the
        crc32c GCS checks the bytes against, and the bytes, if the object does not exist yet."""
        base = self.client._connection.API_BASE_URL.rstrip("/")
        body = MultipartBody(name, path, crc32c, metadata)
        response = self.client._base_connection._make_request(
            "POST",
            f"{base}/upload/storage/v1/b/{quote(self.bucket_name, safe='')}/o?uploadType=multipart&ifGenerationMatch=0"
            + (f"&kmsKeyName={quote(key, safe='')}" if (key := self.key_of(name)) else ""),
            data=body,
            headers={"Content-Type": body.content_type},
            timeout=60,
        )
        if response.status_code == 412:
            self._check_existing(name, size, crc32c)
            return StoredObject(name, size, crc32c)
        if not 200 <= response.status_code < 300:
            raise cloud_errors.from_http_response(response)
        found = response.json()
        if int(found.get("size", -1)) != size or found.get("crc32c", crc32c) != crc32c:
            raise BackendError(
                f"{self.uri(name)} was stored as {found.get('size')} bytes with crc32c {found.get('crc32c')}; "
                f"{size} bytes with crc32c {crc32c} were sent"
            )
        return StoredObject(name, size, crc32c, int(found.get("generation") or 0), metadata=dict(metadata))

    def list_objects(self, prefix: str, start_offset: str | None = None) -> list[StoredObject]:
        def attempt() -> list[StoredObject]:
            # The whole listing in one attempt: a page lost midway starts over.
            blobs = self.client.list_blobs(
                self.bucket_name, prefix=prefix, start_offset=start_offset, retry=None, timeout=60
            )
            return [_stored(b) for b in blobs]

        return self.retry.call(f"list {self.uri(prefix)}", attempt)

    def stat(self, name: str) -> StoredObject | None:
        def attempt() -> StoredObject | None:
            blob = self.bucket.get_blob(name, retry=None, timeout=30)
            return None if blob is None else _stored(blob)

        return self.retry.call(f"stat {self.uri(name)}", attempt)

    def read_object(self, name: str) -> ObjectData | None:
        def attempt() -> ObjectData | None:
            blob = self.bucket.get_blob(name, retry=None, timeout=30)
            if blob is None:
                return None
            try:
                # That generation's bytes, never a mix of two writes.
                data = blob.download_as_bytes(if_generation_match=blob.generation, retry=None, timeout=60)
            except gexc.PreconditionFailed as exc:  # rewritten between the two calls: read again
                raise gexc.ServiceUnavailable(f"{name} changed while being read") from exc
            except gexc.NotFound:
                return None
            return ObjectData(data, int(blob.generation), blob.updated.timestamp() if blob.updated else 0.0)

        return self.retry.call(f"read {self.uri(name)}", attempt)

    def delete_objects(self, names: Sequence[str]) -> list[bool]:
        """Per 100 names, one batch request of deletes (free); a delete the batch did
        not settle (a transient error) is made again on its own."""
        out: list[bool] = []
        for k in range(0, len(names), gcs_batch.MAX_CALLS):
            chunk = names[k : k + gcs_batch.MAX_CALLS]
            statuses = self._batch(
                f"delete {len(chunk)} objects from {self.uri(chunk[0])} ...",
                [gcs_batch.delete_call(self.bucket_name, n) for n in chunk],
            )
            out += [s != 404 if 200 <= s < 300 or s == 404 else self._delete(n) for n, s in zip(chunk, statuses)]
        return out

    def _delete(self, name: str) -> bool:
        def attempt() -> bool:
            try:
                self.bucket.delete_blob(name, retry=None, timeout=30)
            except gexc.NotFound:
                return False
            return True

        return self.retry.call(f"delete {self.uri(name)}", attempt)

    def write_object(
        self, name: str, data: bytes, if_generation_match: int, metadata: Mapping[str, str] | None = None
    ) -> StoredObject:
        def attempt() -> StoredObject:
            blob = self.bucket.blob(name, kms_key_name=self.key_of(name))
            if metadata:
                blob.metadata = dict(metadata)
            try:
                blob.upload_from_string(
                    data,
                    content_type="application/json",
                    if_generation_match=if_generation_match,
                    retry=None,
                    timeout=30,
                )
            except gexc.PreconditionFailed as exc:
                raise PreconditionFailedError(
                    f"{self.uri(name)} is not at generation {if_generation_match}: someone else wrote it"
                ) from exc
            return _stored(blob)

        return self.retry.call(f"write {self.uri(name)}", attempt)

    def _copy(self, name: str, to: str) -> None:
        """Copy ``name`` to ``to`` unless ``to`` exists (one request, or one call of a batch).
        The precondition is what makes a repeat harmless: the bytes under a name never change."""
        # The JSON API's copy, sent as the client's copy_blob would, but naming the key:
        # a copy names no key of its own and would fall back to the bucket's default.
        params: dict[str, object] = {"ifGenerationMatch": 0}
        if key := self.key_of(to):
            params["destinationKmsKeyName"] = key
        path = f"{self.bucket.blob(name).path}/copyTo{self.bucket.blob(to).path}"
        self.client._post_resource(path, None, query_params=params, timeout=60, retry=None)

    def move_object(self, name: str, to: str) -> bool:
        def attempt() -> bool:
            try:
                self._copy(name, to)
            except gexc.PreconditionFailed:
                pass  # copied by an earlier attempt: the name's bytes never change
            except gexc.NotFound:
                if self.bucket.get_blob(to, retry=None, timeout=30) is None:
                    raise BackendError(f"cannot move {self.uri(name)}: neither it nor {self.uri(to)} exists") from None
                return False
            try:
                self.bucket.delete_blob(name, retry=None, timeout=30)
            except gexc.NotFound:
                return False
            return True

        return self.retry.call(f"move {self.uri(name)}", attempt)

    def move_objects(self, moves: Sequence[tuple[str, str]]) -> list[bool]:
        """See the interface: per 100 pairs, one batch request of copies, then one of
        deletes. A pair whose copy or delete the batch did not settle (a missing
        source, a transient error) goes through ``move_object``, which decides it."""
        out: list[bool] = []
        for k in range(0, len(moves), gcs_batch.MAX_CALLS):
            out += self._move_batch(moves[k : k + gcs_batch.MAX_CALLS])
        return out

    def _move_batch(self, moves: Sequence[tuple[str, str]]) -> list[bool]:
        bucket = self.bucket_name
        copied = self._batch(
            f"copy {len(moves)} objects to {self.uri(moves[0][1])} ...",
            [gcs_batch.copy_call(bucket, n, t, self.key_of(t)) for n, t in moves],
        )
        settled: list[bool | None] = [None] * len(moves)
        to_delete = [i for i, status in enumerate(copied) if 200 <= status < 300 or status == 412]
        deleted = self._batch(
            f"delete {len(to_delete)} objects from {self.uri(moves[0][0])} ...",
            [gcs_batch.delete_call(bucket, moves[i][0]) for i in to_delete],
        )
        for i, status in zip(to_delete, deleted, strict=True):
            if 200 <= status < 300 or status == 404:
                settled[i] = status != 404  # 404: gone already, as a repeat finds it
        return [self.move_object(*moves[i]) if done is None else done for i, done in enumerate(settled)]

    def _batch(self, what: str, calls: list[tuple[str, str]]) -> list[int]:
        """Make ``calls`` in one batch request; the HTTP status of each, in order.
        The request as a whole is retried."""
        return self.retry.call(what, lambda: gcs_batch.send(self.client, calls, self.requests))

    def download(self, name: str, path: Path) -> None:
        """``name``'s bytes into ``path``, checked against the crc32c GCS sends with
        them: one GET of the media, through the client's pool (see :mod:`.gcs_media`)."""
        reader = self._reader()
        self.retry.call(f"download {self.uri(name)}", lambda: reader.read_into(name, path))

    def read_bytes(self, name: str) -> bytes:
        reader = self._reader()
        return self.retry.call(f"download {self.uri(name)}", lambda: reader.read(name))

    def _reader(self) -> MediaReader:
        if self._media is None:
            self._media = MediaReader(self.client, self.bucket_name, self.requests)
        return self._media

    def copy_object(self, name: str, to: str) -> bool:
        def attempt() -> bool:
            # Looked up first: fake-gcs-server ignores the precondition on a copy.
            if self.bucket.get_blob(to, retry=None, timeout=30) is not None:
                return False
            try:
                self._copy(name, to)
            except gexc.PreconditionFailed:
                return False  # there already: an earlier attempt's copy
            except gexc.NotFound:
                raise BackendError(f"cannot copy {self.uri(name)}: it does not exist") from None
            return True

        return self.retry.call(f"copy {self.uri(name)}", attempt)

    def set_lifecycle(self, rules: list[LifecycleRule]) -> list[LifecycleRule]:
        def attempt() -> list[LifecycleRule]:
            bucket = self.client.get_bucket(self.bucket_name, retry=None, timeout=30)
            bucket.clear_lifecycle_rules()
            for r in rules:
                if r.action == "delete":
                    bucket.add_lifecycle_delete_rule(age=r.age_days, matches_prefix=[r.prefix])
                else:
                    bucket.add_lifecycle_set_storage_class_rule(
                        r.storage_class, age=r.age_days, matches_prefix=[r.prefix]
                    )
            bucket.patch(retry=None, timeout=30)
            return _rules(self.client.get_bucket(self.bucket_name, retry=None, timeout=30).lifecycle_rules)

        return self.retry.call(f"set the lifecycle of {self.bucket_name}", attempt)

    def _check_existing(self, name: str, size: int, crc32c: str) -> None:
        """After a 412: the object there must hold these bytes."""
        if not self._existing(name, size, crc32c):  # deleted between the 412 and now: upload again
            raise gexc.ServiceUnavailable(f"{name} vanished after a 412")

    def _existing(self, name: str, size: int, crc32c: str) -> bool:
        """Whether ``name`` exists already, with these bytes (ObjectConflictError if with others)."""
        blob = self.bucket.get_blob(name, retry=None, timeout=30)
        if blob is not None and (blob.size != size or (blob.crc32c and blob.crc32c != crc32c)):
            raise ObjectConflictError(
                f"{self.uri(name)} exists with size {blob.size} crc32c {blob.crc32c}, "
                f"expected {size} {crc32c}: another writer used this object name"
            )
        return blob is not None

    def ensure_bucket(self, location: str) -> None:
        def attempt() -> None:
            if self.client.lookup_bucket(self.bucket_name, retry=None, timeout=30) is None:
                self.client.create_bucket(self.bucket_name, location=location, retry=None, timeout=30)

        self.retry.call(f"create bucket {self.bucket_name}", attempt)
