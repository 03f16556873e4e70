"""Table definitions: parse and validate one JSON file per table.

A table file holds BigQuery's own JSON schema for ``fields`` (as
``bq show --schema`` prints it: name, type, mode, fields, description, plus
optional ``maxLength``/``precision``/``scale``) and the table options::

    {
      "description": "...",
      "fields": [{"name": "user_id", "type": "STRING", "mode": "REQUIRED"}, ...],
      "time_partitioning": {"field": "timestamp", "type": "DAY",
                            "expiration_days": 90, "require_partition_filter": false},
      "clustering": ["user_id"],
      "labels": {"app": "leafloaf"}
    }

The table's name is the file's stem. Every table also gets the system column
``_event_id`` (STRING, REQUIRED), placed first, holding the id the buffer
assigns to each event; schema files may not declare it themselves.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SchemaError

EVENT_ID = "_event_id"

# Legacy names, as `bq show --schema` prints them, are canonical here.
TYPE_ALIASES = {
    "STRING": "STRING",
    "BYTES": "BYTES",
    "INTEGER": "INTEGER",
    "INT64": "INTEGER",
    "FLOAT": "FLOAT",
    "FLOAT64": "FLOAT",
    "NUMERIC": "NUMERIC",
    "DECIMAL": "NUMERIC",
    "BIGNUMERIC": "BIGNUMERIC",
    "BIGDECIMAL": "BIGNUMERIC",
    "BOOLEAN": "BOOLEAN",
    "BOOL": "BOOLEAN",
    "TIMESTAMP": "TIMESTAMP",
    "DATE": "DATE",
    "TIME": "TIME",
    "DATETIME": "DATETIME",
    "GEOGRAPHY": "GEOGRAPHY",
    "JSON": "JSON",
    "RECORD": "RECORD",
    "STRUCT": "RECORD",
}
MODES = ("NULLABLE", "REQUIRED", "REPEATED")
PARTITION_TYPES = ("TIMESTAMP", "DATE", "DATETIME")
PARTITION_UNITS = ("DAY", "HOUR", "MONTH", "YEAR")
MAX_DEPTH = 15  # BigQuery's limit on RECORD nesting
MAX_CLUSTERING = 4
MAX_COLUMN_NAME = 300
_COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TABLE_RE = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
# BigQuery reserves these column-name prefixes (case-insensitive).
_RESERVED_PREFIXES = ("_table_", "_file_", "_partition", "_row_timestamp", "__root__", "_colon_")
_FIELD_KEYS = {"name", "type", "mode", "fields", "description", "maxLength", "precision", "scale"}
_TABLE_KEYS = {"description", "fields", "time_partitioning", "clustering", "labels", "kms_key"}
# A Cloud KMS key's resource name (customer-managed encryption).
KMS_KEY_RE = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")
KMS_KEY_FORM = "projects/P/locations/L/keyRings/R/cryptoKeys/K"
_PARTITION_KEYS = {"field", "type", "expiration_days", "require_partition_filter"}


@dataclass(frozen=True)
class Field:
    """One column. ``type`` is canonical (INTEGER, FLOAT, BOOLEAN, RECORD, ...)."""

    name: str
    type: str
    mode: str = "NULLABLE"
    fields: tuple[Field, ...] = ()
    description: str | None = None
    max_length: int | None = None
    precision: int | None = None
    scale: int | None = None

    @property
    def repeated(self) -> bool:
        return self.mode == "REPEATED"

    @property
    def required(self) -> bool:
        return self.mode == "REQUIRED"


@dataclass(frozen=True)
class Partitioning:
    field: str
    type: str = "DAY"
    expiration_days: float | None = None
    require_partition_filter: bool = False


@dataclass(frozen=True)
class TableDef:
    """A validated table: its columns (``_event_id`` first) and options."""

    name: str
    fields: tuple[Field, ...]
    description: str | None = None
    partitioning: Partitioning | None = None
    clustering: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    kms_key: str | None = None  # this table's own key, over the configuration's ``kms_key``

    @property
    def user_fields(self) -> tuple[Field, ...]:
        """The columns the schema file declares (everything but ``_event_id``)."""
        return tuple(f for f in self.fields if f.name != EVENT_ID)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


EVENT_ID_FIELD = Field(
    EVENT_ID,
    "STRING",
    "REQUIRED",
    description="Time-ordered unique id (UUIDv7) assigned by the bqspool buffer.",
)


def _fail(msg: str, source: str | None, path: str | None = None) -> SchemaError:
    return SchemaError(msg, source=source, field=path)


def parse_field(raw: Any, source: str | None, parent: str = "", depth: int = 1) -> Field:
    """Validate one BigQuery JSON schema field (recursively)."""
    if not isinstance(raw, dict):
        raise _fail(f"a field must be an object, got {type(raw).__name__}", source, parent or None)
    name = raw.get("name")
    path = f"{parent}.{name}" if parent else str(name)
    if not isinstance(name, str) or not _COLUMN_RE.fullmatch(name):
        raise _fail(
            "invalid column name: use letters, digits and underscores, not starting with a digit",
            source,
            path,
        )
    if len(name) > MAX_COLUMN_NAME:
        raise _fail(f"column name longer than {MAX_COLUMN_NAME} characters", source, path)
    if name.lower().startswith(_RESERVED_PREFIXES):
        raise _fail("column name uses a prefix BigQuery reserves", source, path)
    if not parent and name.lower() == EVENT_ID:
        raise _fail(f"{EVENT_ID} is the system column bqspool adds; do not declare it", source, path)
    extra = set(raw) - _FIELD_KEYS
    if extra:
        raise _fail(f"unknown keys {sorted(extra)}", source, path)
    raw_type = raw.get("type")
    if not isinstance(raw_type, str) or raw_type.upper() not in TYPE_ALIASES:
        raise _fail(f"unknown type {raw_type!r}", source, path)
    ftype = TYPE_ALIASES[raw_type.upper()]
    mode = raw.get("mode", "NULLABLE")
    if not isinstance(mode, str) or mode.upper() not in MODES:
        raise _fail(f"unknown mode {mode!r} (expected one of {', '.join(MODES)})", source, path)
    mode = mode.upper()
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise _fail("description must be a string", source, path)
    sub: tuple[Field, ...] = ()
    if ftype == "RECORD":
        if depth >= MAX_DEPTH:
            raise _fail(f"RECORD nesting deeper than {MAX_DEPTH} levels", source, path)
        raw_sub = raw.get("fields")
        if not isinstance(raw_sub, list) or not raw_sub:
            raise _fail("a RECORD needs a non-empty 'fields' list", source, path)
        sub = tuple(parse_field(r, source, path, depth + 1) for r in raw_sub)
        _check_unique(sub, source, path)
    elif "fields" in raw:
        raise _fail(f"only RECORD fields have sub-fields, this one is {ftype}", source, path)
    max_length = _opt_int(raw, "maxLength", source, path)
    if max_length is not None and ftype not in ("STRING", "BYTES"):
        raise _fail("maxLength applies to STRING and BYTES only", source, path)
    precision = _opt_int(raw, "precision", source, path)
    scale = _opt_int(raw, "scale", source, path)
    if (precision is not None or scale is not None) and ftype not in ("NUMERIC", "BIGNUMERIC"):
        raise _fail("precision/scale apply to NUMERIC and BIGNUMERIC only", source, path)
    if precision is not None:
        # BigQuery: NUMERIC(P, S) needs 0 <= S <= 9 and 1 <= P - S <= 29;
        # BIGNUMERIC(P, S) needs 0 <= S <= 38 and 1 <= P - S <= 38.
        max_int, max_s = (29, 9) if ftype == "NUMERIC" else (38, 38)
        s = scale or 0
        if not (0 <= s <= max_s and 1 <= precision - s <= max_int):
            raise _fail(f"precision {precision} / scale {s} out of range for {ftype}", source, path)
    elif scale is not None:
        raise _fail("scale needs precision", source, path)
    return Field(name, ftype, mode, sub, description, max_length, precision, scale)


def _opt_int(raw: dict, key: str, source: str | None, path: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        # BigQuery's JSON prints these as strings ("maxLength": "10").
        number = int(value)
    except (TypeError, ValueError):
        raise _fail(f"{key} must be an integer, got {value!r}", source, path) from None
    if number < 0 or isinstance(value, bool):
        raise _fail(f"{key} must be a non-negative integer", source, path)
    return number


def _check_unique(fields: tuple[Field, ...], source: str | None, parent: str = "") -> None:
    seen: set[str] = set()
    for f in fields:
        # BigQuery column names are case-insensitive.
        key = f.name.lower()
        if key in seen:
            path = f"{parent}.{f.name}" if parent else f.name
            raise _fail("duplicate column name (names are case-insensitive)", source, path)
        seen.add(key)


def parse_table(name: str, raw: Any, source: str | None = None) -> TableDef:
    """Validate one table definition; errors name ``source`` and the field."""
    if not _TABLE_RE.fullmatch(name):
        raise _fail(f"invalid table name {name!r}: letters, digits and underscores only", source)
    if not isinstance(raw, dict):
        raise _fail("a table file must hold a JSON object", source)
    extra = set(raw) - _TABLE_KEYS
    if extra:
        raise _fail(f"unknown keys {sorted(extra)}", source)
    raw_fields = raw.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise _fail("'fields' must be a non-empty list", source)
    user = tuple(parse_field(r, source) for r in raw_fields)
    fields = (EVENT_ID_FIELD,) + user
    _check_unique(fields, source)
    by_name = {f.name: f for f in user}
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise _fail("description must be a string", source)
    partitioning = _parse_partitioning(raw.get("time_partitioning"), by_name, source)
    clustering = _parse_clustering(raw.get("clustering"), by_name, source)
    labels = _parse_labels(raw.get("labels"), source)
    key = raw.get("kms_key")
    if key is not None and not (isinstance(key, str) and KMS_KEY_RE.fullmatch(key)):
        raise _fail(f"kms_key must be a Cloud KMS key's name ({KMS_KEY_FORM}), got {key!r}", source)
    return TableDef(name, fields, description, partitioning, clustering, labels, source, key)


def _parse_partitioning(raw: Any, by_name: dict[str, Field], source: str | None):
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _fail("time_partitioning must be an object", source)
    extra = set(raw) - _PARTITION_KEYS
    if extra:
        raise _fail(f"time_partitioning: unknown keys {sorted(extra)}", source)
    fname = raw.get("field")
    if not isinstance(fname, str) or "." in fname:
        raise _fail("time_partitioning.field must name a top-level column", source, str(fname))
    f = by_name.get(fname)
    if f is None:
        raise _fail("time_partitioning.field names no column", source, fname)
    if f.type not in PARTITION_TYPES or f.repeated:
        raise _fail(
            f"partition field must be a non-repeated TIMESTAMP, DATE or DATETIME, got {f.mode} {f.type}",
            source,
            fname,
        )
    unit = str(raw.get("type", "DAY")).upper()
    if unit not in PARTITION_UNITS:
        raise _fail(f"time_partitioning.type must be one of {', '.join(PARTITION_UNITS)}", source, fname)
    if unit == "HOUR" and f.type == "DATE":
        raise _fail("HOUR partitioning needs a TIMESTAMP or DATETIME field", source, fname)
    exp = raw.get("expiration_days")
    if exp is not None and (isinstance(exp, bool) or not isinstance(exp, (int, float)) or exp <= 0):
        raise _fail("time_partitioning.expiration_days must be a positive number", source, fname)
    rpf = raw.get("require_partition_filter", False)
    if not isinstance(rpf, bool):
        raise _fail("time_partitioning.require_partition_filter must be true or false", source, fname)
    return Partitioning(fname, unit, exp, rpf)


def _parse_clustering(raw: Any, by_name: dict[str, Field], source: str | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise _fail("clustering must be a list of column names", source)
    if len(raw) > MAX_CLUSTERING:
        raise _fail(f"at most {MAX_CLUSTERING} clustering fields", source)
    if len(set(raw)) != len(raw):
        raise _fail("clustering lists a column twice", source)
    for name in raw:
        f = by_name.get(name)
        if f is None:
            raise _fail("clustering field must be a top-level column", source, name)
        if f.repeated or f.type in ("RECORD", "JSON", "FLOAT"):
            raise _fail(f"cannot cluster on a {f.mode} {f.type} column", source, name)
    return tuple(raw)


def _parse_labels(raw: Any, source: str | None) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail("labels must be an object", source)
    for k, v in raw.items():
        if not _LABEL_KEY_RE.fullmatch(k) or not isinstance(v, str) or not _LABEL_VALUE_RE.fullmatch(v):
            raise _fail(f"invalid label {k!r}: {v!r} (lowercase letters, digits, _ and -)", source)
    return dict(raw)


def load_table_file(path: Path) -> TableDef:
    """Read and validate one ``NAME.json`` table file."""
    source = str(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise _fail(f"not valid JSON: {exc}", source) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"cannot read: {exc}", source) from exc
    return parse_table(path.stem, raw, source)
