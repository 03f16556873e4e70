"""Stage a sealed batch as a Parquet file, deterministically.

The stored payloads are already the values BigQuery needs (see
``bqspool.schemas.coerce``), so staging is: read the batch's payloads from
SQLite in chunks, parse each chunk with Arrow's JSON reader into the
*stored* types, cast to the table's Arrow schema, and append to a Parquet
writer. Memory stays bounded by the chunk size whatever the batch size; the
same rows in the same order always give the same bytes (fixed writer
options, no timestamps in the file).
"""

from __future__ import annotations

import base64
import io
import os
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq
from bqspool.buffer import rows
from bqspool.schemas.arrow import arrow_schema
from bqspool.schemas.definition import Field, TableDef

# Rows read and parsed per step: Arrow's JSON reader needs several times the
# text's size, so small steps keep a batch of any size within bounded memory.
CHUNK_ROWS = 16_384
# Rows per Parquet row group: about 20 MiB of Arrow data for 300-byte
# events (BigQuery prefers row groups of 16 MiB or more).
ROW_GROUP_ROWS = 65_536
PARSE_BLOCK = 1 << 20


def _stored_type(f: Field) -> pa.DataType:
    """The Arrow type Arrow's JSON reader should parse the stored form into."""
    if f.type == "RECORD":
        t = pa.struct([pa.field(s.name, _stored_type(s)) for s in f.fields])
    else:
        t = {
            "INTEGER": pa.int64(),
            "FLOAT": pa.float64(),
            "BOOLEAN": pa.bool_(),
            "TIMESTAMP": pa.int64(),
            "TIME": pa.int64(),
            "DATETIME": pa.timestamp("us"),
        }.get(f.type, pa.string())
    return pa.list_(t) if f.repeated else t


def _cast(arr: pa.Array, f: Field, target: pa.DataType) -> pa.Array:
    """Cast one parsed column (or nested child) to its target type.

    Structs and lists are rebuilt child by child rather than cast whole:
    under a null parent a REQUIRED child is null too, which Arrow's struct
    cast rejects for a non-nullable field although Parquet stores it fine.
    """
    if f.repeated:
        inner = Field(f.name, f.type, "NULLABLE", f.fields)
        values = _cast(arr.values, inner, target.value_type)
        return pa.ListArray.from_arrays(
            arr.offsets, values, type=target, mask=arr.is_null() if arr.null_count else None
        )
    if f.type == "RECORD":
        children = [_cast(arr.field(i), s, target.field(i).type) for i, s in enumerate(f.fields)]
        children = [_fill_under_null_parent(c, target.field(i)) for i, c in enumerate(children)]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=arr.is_null() if arr.null_count else None)
    if f.type == "BYTES":
        # Arrow has no base64 kernel and BYTES columns are rare: decode in Python.
        return pa.array([None if v is None else base64.b64decode(v) for v in arr.to_pylist()], type=pa.binary())
    return pc.cast(arr, target)


def _fill_under_null_parent(child: pa.Array, field: pa.Field) -> pa.Array:
    """Give a non-nullable child a placeholder where it is null.

    Coercion guarantees a REQUIRED child is null only where its parent
    record is null, and there the value is never read; but the Parquet
    writer refuses nulls in a non-nullable column whatever the parent.
    """
    if field.nullable or not child.null_count:
        return child
    t = field.type
    if pa.types.is_struct(t):
        kids = [_fill_under_null_parent(child.field(i), t.field(i)) for i in range(t.num_fields)]
        return pa.StructArray.from_arrays(kids, fields=list(t))
    if pa.types.is_list(t):
        empty = pa.ListArray.from_arrays(pa.array([0, 0], pa.int32()), child.values.slice(0, 0), type=t)
        return pc.fill_null(child, empty[0])
    if pa.types.is_string(t) or pa.types.is_binary(t):
        placeholder = pa.scalar("" if pa.types.is_string(t) else b"", t)
    elif pa.types.is_date32(t):
        placeholder = pa.scalar(0, pa.int32()).cast(t)
    else:  # numbers, booleans, times and timestamps all cast from int64 0
        placeholder = pa.scalar(0, pa.int64()).cast(t)
    return pc.fill_null(child, placeholder)


class Stager:
    """Turns payload rows of one table into a Parquet file."""

    def __init__(self, table: TableDef):
        self.table = table
        self.schema = arrow_schema(table)
        self.stored_schema = pa.schema([pa.field(f.name, _stored_type(f)) for f in table.fields])
        self._parse = pajson.ParseOptions(explicit_schema=self.stored_schema, unexpected_field_behavior="error")

    def to_arrow(self, payloads: str | list[str]) -> pa.Table:
        """Parse and cast one chunk of stored payloads (NDJSON text, or a list of rows)."""
        text = payloads if isinstance(payloads, str) else "\n".join(payloads)
        data = text.encode("utf-8")
        try:
            # Blocks of 1 MiB are parsed on all cores; a step of 16k events
            # in one block would be parsed on one (0.29 s against 0.18 s
            # for 300k events on 2 cores).
            parsed = self._read_json(data, PARSE_BLOCK)
        except pa.ArrowInvalid:
            # A line a few times longer than a block straddles block
            # boundaries, which the reader refuses. Rows go up to the
            # table's row size limit, so read the step as one block; bad
            # data fails here again, with its own error.
            parsed = self._read_json(data, len(data) + 1)
        columns = [
            _cast(parsed.column(f.name).combine_chunks(), f, target.type)
            for f, target in zip(self.table.fields, self.schema)
        ]
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _read_json(self, data: bytes, block_size: int) -> pa.Table:
        return pajson.read_json(
            io.BytesIO(data), read_options=pajson.ReadOptions(block_size=block_size), parse_options=self._parse
        )

    def write(self, chunks, path: Path) -> int:
        """Write payload chunks (NDJSON text or lists of rows) to ``path``; returns the row count."""
        rows = 0
        tmp = path.with_name(path.name + ".tmp")
        # Created owner-only before Arrow opens it (truncating keeps the
        # mode): the file holds the same data as the 0600 buffer.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600))
        with parquet_writer(tmp, self.schema) as writer:
            pending: list[pa.Table] = []
            pending_rows = 0
            for payloads in chunks:
                if not payloads:
                    continue
                t = self.to_arrow(payloads)
                del payloads
                rows += t.num_rows
                pending.append(t)
                pending_rows += t.num_rows
                if pending_rows >= ROW_GROUP_ROWS:
                    # concat_tables only chains the chunks: no copy.
                    writer.write_table(pa.concat_tables(pending), row_group_size=pending_rows)
                    pending, pending_rows = [], 0
            if pending:
                writer.write_table(pa.concat_tables(pending), row_group_size=pending_rows)
        tmp.replace(path)  # a crash mid-write never leaves a partial file under the final name
        return rows


def parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """The one way bqspool writes Parquet: the same rows give the same bytes."""
    return pq.ParquetWriter(
        path,
        schema,
        compression="zstd",
        use_dictionary=True,
        write_statistics=True,
        data_page_version="1.0",
        version="2.6",
        store_schema=True,
    )


def write_rows(table: pa.Table, path: Path) -> None:
    """Write ``table`` (a slice of a staged file) deterministically to ``path``, owner-only."""
    tmp = path.with_name(path.name + ".tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600))
    with parquet_writer(tmp, table.schema) as writer:
        writer.write_table(table, row_group_size=max(table.num_rows, 1))
    tmp.replace(path)


def read_batch_payloads(conn: sqlite3.Connection, stream: str, lo: int, hi: int, chunk: int = CHUNK_ROWS):
    """Yield the batch's payloads in seq order as NDJSON text, about ``chunk`` events at a time.

    A stored row holds one or more events as JSON lines, so joining rows
    gives NDJSON; a step ends at the first row boundary past ``chunk``
    events. One string per step instead of one per event keeps the Python
    heap (and the process's peak memory) small.
    """
    parts: list[str] = []
    events = 0
    for n, payload in rows.read_range(conn, stream, lo, hi):
        parts.append(payload)
        events += n
        if events >= chunk:
            yield "\n".join(parts)
            parts, events = [], 0
    if parts:
        yield "\n".join(parts)


def staging_error(exc: BaseException) -> bool:
    """Whether staging failed because of the batch's rows (quarantine it), not the host."""
    if isinstance(exc, OSError):  # disk full, I/O: the host's, retry later
        return False
    return isinstance(
        exc,
        (
            ValueError,
            TypeError,
            KeyError,
            ArithmeticError,
            UnicodeError,
            sqlite3.DataError,
            sqlite3.OperationalError,
            sqlite3.IntegrityError,
        ),
    ) or type(exc).__module__.startswith("pyarrow")
