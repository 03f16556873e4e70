"""Schema sets: a directory of table files, by path or by bundled name."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from .definition import TableDef, load_table_file
from .errors import SchemaError
from .queries import NamedQuery, load_queries

BUNDLED_DIR = Path(__file__).with_name("sets")


def bundled_names() -> list[str]:
    """Names of the schema sets shipped with bqspool (``leafloaf``, ``eixa``)."""
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if p.is_dir() and any(p.glob("*.json")))


class SchemaSet:
    """An immutable mapping of table name to :class:`TableDef`."""

    def __init__(
        self, tables: dict[str, TableDef], name: str, source: str, queries: dict[str, NamedQuery] | None = None
    ):
        self._tables = dict(tables)
        self.name = name
        self.source = source
        self.queries: dict[str, NamedQuery] = dict(queries or {})  # queries/NAME.sql, see .queries

    def __getitem__(self, table: str) -> TableDef:
        return self._tables[table]

    def __contains__(self, table: object) -> bool:
        return table in self._tables

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)

    def get(self, table: str) -> TableDef | None:
        return self._tables.get(table)

    def tables(self) -> list[TableDef]:
        return list(self._tables.values())

    def __repr__(self) -> str:
        return f"SchemaSet({self.name!r}, tables={sorted(self._tables)})"


def resolve_schema_dir(spec: str | os.PathLike[str]) -> Path:
    """A bundled set's name, or a directory path, to the directory."""
    text = str(spec)
    if isinstance(spec, str) and "/" not in text and (BUNDLED_DIR / text).is_dir():
        return BUNDLED_DIR / text
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    raise SchemaError(
        f"no schema set {text!r}: not a directory, and not a bundled set (bundled: {', '.join(bundled_names())})"
    )


def load_schema_set(spec: str | os.PathLike[str] | SchemaSet) -> SchemaSet:
    """Load and validate a schema set.

    ``spec`` is a bundled set's name (``"leafloaf"``), a directory of
    ``NAME.json`` table files (and optionally ``queries/NAME.sql``, see
    :mod:`.queries`), or an already loaded :class:`SchemaSet`.
    Raises :class:`SchemaError` naming the file and field of the first problem.
    """
    if isinstance(spec, SchemaSet):
        return spec
    directory = resolve_schema_dir(spec)
    files = sorted(directory.glob("*.json"))
    if not files:
        raise SchemaError(f"{directory}: no *.json table files")
    tables: dict[str, TableDef] = {}
    lowered: dict[str, str] = {}
    for path in files:
        table = load_table_file(path)
        key = table.name.lower()
        if key in lowered:
            raise SchemaError(f"table name clashes with {lowered[key]}", source=str(path))
        lowered[key] = str(path)
        tables[table.name] = table
    return SchemaSet(tables, directory.name, str(directory), load_queries(directory))
