"""The embeddable writer: ``from bqspool.buffer import Buffer``.

Imports only the standard library, msgspec and ``bqspool.schemas``: no
pyarrow, no Google clients, so apps that embed it stay lean.
"""

from bqspool.schemas.errors import (
    BqspoolError,
    BufferBusyError,
    BufferClosedError,
    BufferFormatError,
    BufferFullError,
    ConfigError,
    DiskFullError,
    EventsLostError,
    PermanentError,
    RetryableError,
    SchemaError,
    UnknownStreamError,
    ValidationError,
)

from .core import Buffer
from .deadletters import ReplayReport
from .ids import uuid7

__all__ = [
    "Buffer",
    "BqspoolError",
    "BufferBusyError",
    "BufferClosedError",
    "BufferFormatError",
    "BufferFullError",
    "ConfigError",
    "DiskFullError",
    "EventsLostError",
    "PermanentError",
    "ReplayReport",
    "RetryableError",
    "SchemaError",
    "UnknownStreamError",
    "ValidationError",
    "uuid7",
]
