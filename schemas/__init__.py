"""Table definitions, schema sets, validation/coercion and type mappings.

Light on purpose: importing this package pulls in only the standard library
(the Arrow mapping imports pyarrow when it is first called).
"""

from .coerce import Coercer
from .definition import EVENT_ID, Field, Partitioning, TableDef, load_table_file, parse_table
from .errors import (
    BqspoolError,
    ConfigError,
    PermanentError,
    RetryableError,
    SchemaError,
    UnknownStreamError,
    ValidationError,
)
from .registry import SchemaSet, bundled_names, load_schema_set

__all__ = [
    "EVENT_ID",
    "BqspoolError",
    "Coercer",
    "ConfigError",
    "Field",
    "Partitioning",
    "PermanentError",
    "RetryableError",
    "SchemaError",
    "SchemaSet",
    "TableDef",
    "UnknownStreamError",
    "ValidationError",
    "bundled_names",
    "load_schema_set",
    "load_table_file",
    "parse_table",
]
