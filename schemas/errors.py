"""The one exception tree of bqspool.

It lives in the lowest layer (``bqspool.schemas``) so every package can raise
from it without import cycles; ``bqspool.buffer`` and ``bqspool.loader``
re-export it.

::

    BqspoolError
    ├── RetryableError          the same call may succeed later, unchanged
    │   ├── BufferFullError     size cap reached (on_full="raise", or block timed out)
    │   ├── BufferBusyError     another process held the write lock too long
    │   ├── BufferUnavailableError  the file cannot be opened now (EMFILE, permissions, I/O); left alone
    │   ├── DiskFullError       SQLITE_FULL: free disk space, then retry
    │   ├── BackendUnavailableError  GCS or BigQuery stayed unreachable past the retry policy
    │   ├── LeaseHeldError      another loader is draining this buffer
    │   └── LeaseLostError      this loader's lease was taken over; it stopped before changing anything
    └── PermanentError          retrying the same call cannot succeed
        ├── ConfigError         bad option or setting
        ├── SchemaError         a table definition is invalid (names file and field)
        ├── ValidationError     an event does not fit its table (names field path)
        │   └── UnknownStreamError
        ├── BufferClosedError   append after close()
        ├── EventsLostError     wait=False events were lost to a failed commit (told by flush())
        ├── BufferFormatError   the file was written by a newer bqspool
        ├── BackendError        GCS/BigQuery refused a request for good (permissions, not found)
        │   ├── ObjectConflictError  an object exists with other content than ours
        │   ├── PreconditionFailedError  a conditional write met another generation: someone wrote first
        │   └── NotAvailableError  the backend does not offer this (the emulator's missing job history)
        ├── RestoreRefusedError the restore target already holds rows of those batches
        ├── SetupError          a table cannot be brought to its schema
        └── ClockSkewError      this host's clock is too far from the storage server's to commit

Third-party errors (sqlite3, google clients) are translated at the boundary
with ``raise ... from`` so callers only ever need this tree.
"""

from __future__ import annotations


class BqspoolError(Exception):
    """Base of every error bqspool raises on purpose."""

    retryable = False


class RetryableError(BqspoolError):
    """A transient condition: the same operation may succeed later."""

    retryable = True


class PermanentError(BqspoolError):
    """Retrying the same operation unchanged cannot succeed."""


class BufferFullError(RetryableError):
    """The buffer reached ``max_bytes`` (policy ``raise``, or ``block`` timed out)."""


class BufferBusyError(RetryableError):
    """The buffer file stayed locked by another writer past the busy timeout."""


class BufferUnavailableError(RetryableError):
    """The buffer file cannot be opened now (too many open files, permissions,
    a read-only directory, an I/O error). The file is left as it is."""


class DiskFullError(RetryableError):
    """SQLite reported SQLITE_FULL. The transaction was rolled back; the file is consistent."""


class ConfigError(PermanentError):
    """An option or setting is invalid."""


class SchemaError(PermanentError):
    """A table definition is invalid. ``source`` names the file, ``field`` the field."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        where = ", ".join(p for p in (source, f"field {field!r}" if field else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class ValidationError(PermanentError):
    """An event does not fit its table. ``path`` is the field path (``a.b[2].c``)."""

    def __init__(self, reason: str, *, path: str = "", stream: str | None = None):
        self.reason = reason
        self.path = path
        self.stream = stream
        where = f"field {path!r}: " if path else ""
        prefix = f"stream {stream!r}: " if stream else ""
        super().__init__(f"{prefix}{where}{reason}")


class UnknownStreamError(ValidationError):
    """The stream named in ``append`` has no table in the schema set."""


class BufferClosedError(PermanentError):
    """The buffer was closed."""


class EventsLostError(PermanentError):
    """Events appended with ``wait=False`` were lost: their commit failed for a
    reason of the file (disk, I/O), and nobody was waiting to be told.
    ``lost`` is how many. Raised once per loss, by ``flush()`` or ``close()``."""

    def __init__(self, message: str, *, lost: int = 0):
        self.lost = lost
        super().__init__(message)


class BufferFormatError(PermanentError):
    """The buffer file has a format version this bqspool does not know."""


class BackendUnavailableError(RetryableError):
    """GCS or BigQuery stayed unreachable, or kept failing transiently, past the retry policy."""


class LeaseHeldError(RetryableError):
    """Another loader holds this buffer's drain lease."""


class LeaseLostError(RetryableError):
    """This loader's lease changed hands (it was paused past its expiry); it
    stopped before changing anything."""


class BackendError(PermanentError):
    """GCS or BigQuery refused a request in a way retrying cannot fix."""


class ObjectConflictError(BackendError):
    """An object of ours exists in GCS with a different size or checksum."""


class PreconditionFailedError(BackendError):
    """A write conditional on an object's generation (or its absence) found
    another generation: someone else wrote the object first."""


class NotAvailableError(BackendError):
    """The backend does not offer what was asked (the emulator has no job
    history, say); the message says what and where it is available."""


class RestoreRefusedError(PermanentError):
    """A restore's target already holds rows of the batches it would load."""


class SetupError(PermanentError):
    """A table in BigQuery cannot be brought to the schema set's definition."""


class ClockSkewError(PermanentError):
    """This host's clock is further from the storage server's than the configured
    margin (``skew``: seconds ahead, negative if behind); a committer refuses to act."""

    def __init__(self, message: str, *, skew: float = 0.0):
        self.skew = skew
        super().__init__(message)
