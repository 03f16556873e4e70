"""Table definitions to Arrow schemas (and back). Imports pyarrow lazily.

Types follow what BigQuery's Parquet loader expects: TIMESTAMP is
``timestamp("us", "UTC")``, DATETIME zone-less ``timestamp("us")``, DATE
``date32``, TIME ``time64("us")``, NUMERIC ``decimal128(38, 9)``, BIGNUMERIC
``decimal256(76, 38)``, JSON and GEOGRAPHY strings, RECORD a struct, REPEATED
a list. Each Arrow field carries its BigQuery type in metadata
(``bq_type``) so that STRING/JSON/GEOGRAPHY survive the round trip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .definition import Field, TableDef

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

_META = b"bq_type"
_DESC = b"description"


def _scalar_type(f: Field):
    import pyarrow as pa

    t = f.type
    if t in ("STRING", "JSON", "GEOGRAPHY"):
        return pa.string()
    return {
        "INTEGER": pa.int64,
        "FLOAT": pa.float64,
        "BOOLEAN": pa.bool_,
        "BYTES": pa.binary,
        "DATE": pa.date32,
        "TIMESTAMP": lambda: pa.timestamp("us", tz="UTC"),
        "DATETIME": lambda: pa.timestamp("us"),
        "TIME": lambda: pa.time64("us"),
        "NUMERIC": lambda: pa.decimal128(38, 9),
        "BIGNUMERIC": lambda: pa.decimal256(76, 38),
    }[t]()


def arrow_field(f: Field) -> pa.Field:
    import pyarrow as pa

    if f.type == "RECORD":
        typ = pa.struct([arrow_field(s) for s in f.fields])
    else:
        typ = _scalar_type(f)
    if f.repeated:
        # Elements of a BigQuery array are never null.
        typ = pa.list_(pa.field("element", typ, nullable=False))
    meta = {_META: f.type.encode()}
    if f.description:
        meta[_DESC] = f.description.encode()
    return pa.field(f.name, typ, nullable=not (f.required or f.repeated), metadata=meta)


def arrow_schema(table: TableDef) -> pa.Schema:
    """The Arrow schema of a table, columns in table order (``_event_id`` first)."""
    import pyarrow as pa

    return pa.schema([arrow_field(f) for f in table.fields])


def field_from_arrow(af: pa.Field) -> Field:
    """Inverse of :func:`arrow_field` for fields it produced."""
    import pyarrow as pa

    typ = af.type
    mode = "REQUIRED" if not af.nullable else "NULLABLE"
    if pa.types.is_list(typ):
        mode = "REPEATED"
        inner = typ.value_field
        typ = inner.type
    meta = af.metadata or {}
    bq_type = meta.get(_META, b"").decode()
    description = meta[_DESC].decode() if _DESC in meta else None
    if pa.types.is_struct(typ):
        sub = tuple(field_from_arrow(typ.field(i)) for i in range(typ.num_fields))
        return Field(af.name, "RECORD", mode, sub, description)
    if not bq_type:
        raise ValueError(f"arrow field {af.name!r} has no bq_type metadata")
    return Field(af.name, bq_type, mode, (), description)
