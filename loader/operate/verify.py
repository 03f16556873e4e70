"""The live dataset against the schema set: every difference, and the safe fixes.

:func:`drift` lists each difference as one :class:`Drift`, naming the table,
what the schema file says and what the warehouse has. Some have a safe fix
(a missing table, a new NULLABLE column, a relaxed mode, partition expiry,
require-partition-filter, clustering, labels): :func:`fix` applies those.
The rest are refused with the reason and what to do instead, because they
would lose data or cannot be done in place (a type change, a mode
tightened, another partition field).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bqspool.schemas.definition import Field, TableDef
from bqspool.schemas.registry import SchemaSet

from ..interfaces import Warehouse

RECREATE = (
    "create a table with the schema file's definition and copy the data into it "
    "(`bqspool restore --into NEW` reloads the archive), or change the schema file back"
)


@dataclass(frozen=True)
class Drift:
    """One difference. ``fix`` names the safe change ``--fix`` makes; otherwise
    ``advice`` says why it is refused and what to do instead."""

    table: str
    what: str
    expected: str
    actual: str
    fix: str | None = None
    advice: str | None = None

    def __str__(self) -> str:
        return f"{self.table}: {self.what}: the schema file says {self.expected}, BigQuery has {self.actual}"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _mode_text(mode: str | None) -> str:
    return mode or "NULLABLE"


def _columns(table: str, prefix: str, want: tuple[Field, ...], have: dict, top: bool) -> list[Drift]:
    out: list[Drift] = []
    have_lower = {k.lower(): (k, v) for k, v in have.items()}
    for f in want:
        path = f"{prefix}{f.name}"
        found = have_lower.get(f.name.lower())
        if found is None:
            out.append(_missing(table, path, f, top))
        else:
            out += _column(table, path, f, found[1], top)
    wanted = {f.name.lower() for f in want}
    for name, col in have.items():
        if name.lower() not in wanted:
            out.append(
                Drift(
                    table,
                    f"column {prefix}{name}",
                    "no such column",
                    f"{col['type']} {_mode_text(col.get('mode'))}",
                    advice="bqspool never drops a column (its data would go): add it to the schema file, "
                    "or drop it yourself if it is unused",
                )
            )
    return out


def _missing(table: str, path: str, f: Field, top: bool) -> Drift:
    """A column of the schema file the table lacks: added if it may be."""
    if not top:
        return Drift(
            table,
            f"column {path}",
            f"{f.type} {f.mode}",
            "no such field",
            advice="new RECORD sub-fields are not added here: add it with `bq update` and a schema file, or "
            + RECREATE,
        )
    if f.required:
        return Drift(
            table,
            f"column {path}",
            f"{f.type} REQUIRED",
            "no such column",
            advice="a REQUIRED column cannot be added to a table that has rows: "
            "make it NULLABLE in the schema file, or " + RECREATE,
        )
    return Drift(table, f"column {path}", f"{f.type} {f.mode}", "no such column", fix=f"add column {path}")


def _column(table: str, path: str, f: Field, col: dict, top: bool) -> list[Drift]:
    """A column both have: its type, its mode, and a RECORD's fields."""
    if col["type"] != f.type:
        return [
            Drift(
                table,
                f"column {path} type",
                f.type,
                col["type"],
                advice="BigQuery cannot change a column's type in place without rewriting it: " + RECREATE,
            )
        ]
    out = []
    have_mode = _mode_text(col.get("mode"))
    if have_mode != f.mode:
        if top and have_mode == "REQUIRED" and f.mode == "NULLABLE":
            out.append(Drift(table, f"column {path} mode", f.mode, have_mode, fix=f"relax {path} to NULLABLE"))
        else:
            why = (
                "tightening a mode would reject rows the table holds"
                if f.mode == "REQUIRED"
                else "a column cannot switch between repeated and not in place"
            )
            out.append(Drift(table, f"column {path} mode", f.mode, have_mode, advice=f"{why}: {RECREATE}"))
    if f.type == "RECORD":
        out += _columns(table, f"{path}.", f.fields, col.get("fields", {}), top=False)
    return out


def _partitioning(table: TableDef, have: dict | None) -> list[Drift]:
    want = table.partitioning
    name = table.name
    if want is None and have is None:
        return []
    if want is None or have is None:
        return [
            Drift(
                name,
                "time partitioning",
                f"by {want.type} on {want.field}" if want else "none",
                f"by {have['type']} on {have['field']}" if have else "none",
                advice="partitioning cannot be added, removed or changed in place: " + RECREATE,
            )
        ]
    out = []
    if (want.field or "").lower() != (have["field"] or "").lower() or want.type != have["type"]:
        out.append(
            Drift(
                name,
                "time partitioning",
                f"by {want.type} on {want.field}",
                f"by {have['type']} on {have['field']}",
                advice="another partition field or granularity needs a new table: " + RECREATE,
            )
        )
    if (want.expiration_days or None) != (have["expiration_days"] or None):
        out.append(
            Drift(
                name,
                "partition expiration",
                f"{want.expiration_days:g} days" if want.expiration_days else "never",
                f"{have['expiration_days']:g} days" if have["expiration_days"] else "never",
                fix="set the partition expiration",
            )
        )
    if bool(want.require_partition_filter) != bool(have["require_partition_filter"]):
        out.append(
            Drift(
                name,
                "require partition filter",
                str(bool(want.require_partition_filter)).lower(),
                str(bool(have["require_partition_filter"])).lower(),
                fix="set require_partition_filter",
            )
        )
    return out


def table_drift(table: TableDef, have: dict | None) -> list[Drift]:
    """Every difference between ``table``'s definition and what the warehouse has (``table_options``)."""
    if have is None:
        return [Drift(table.name, "table", "a table", "no such table", fix="create the table")]
    if have.get("kind", "table") != "table":
        return [Drift(table.name, "table", "a table", f"a {have['kind']}", advice="drop it, then run `bqspool setup`")]
    out = _columns(table.name, "", table.fields, have["columns"], top=True)
    out += _partitioning(table, have["partitioning"])
    if [c.lower() for c in table.clustering] != [c.lower() for c in have["clustering"]]:
        out.append(
            Drift(
                table.name,
                "clustering",
                ", ".join(table.clustering) or "none",
                ", ".join(have["clustering"]) or "none",
                fix="set the clustering fields (new data is clustered so; old data as it is reclustered)",
            )
        )
    # Only the schema file's labels: others on the table are someone else's.
    wrong = {k: v for k, v in table.labels.items() if have["labels"].get(k) != v}
    if wrong:
        out.append(
            Drift(
                table.name,
                "labels",
                ", ".join(f"{k}={v}" for k, v in sorted(wrong.items())),
                ", ".join(f"{k}={have['labels'][k]}" for k in sorted(wrong) if k in have["labels"]) or "none of them",
                fix="set the labels",
            )
        )
    return out


def drift(warehouse: Warehouse, schemas: SchemaSet) -> list[Drift]:
    """Every difference between the schema set and the live dataset, table by table:
    each table's key against its own or the configured one (``kms_key``), and a
    table past 80% of the partitions a table may hold."""
    out: list[Drift] = []
    for table in schemas.tables():
        have = warehouse.table_options(table.name)
        out += table_drift(table, have)
        if have is not None:
            out += _key_drift(table, have, table.kms_key or getattr(warehouse, "kms_key", None))
            out += _partition_room(warehouse, table, have)
    return out


def _key_drift(table: TableDef, have: dict, key: str | None) -> list[Drift]:
    if not key or have.get("kms_key") == key:
        return []
    return [
        Drift(
            table.name,
            "encryption key",
            key,
            have.get("kms_key") or "Google-managed encryption",
            advice="BigQuery re-encrypts a table only by copying it: `bq cp` it with "
            "--destination_kms_key, or `restore --into` a new table created with the key",
        )
    ]


def _partition_room(warehouse: Warehouse, table: TableDef, have: dict) -> list[Drift]:
    """A warning once a partitioned table holds 80% of the partitions it may (10,000 in
    BigQuery): past the limit, every load job into it fails. Asked only of a table
    partitioned as the schema file says (other drift is reported already)."""
    if table.partitioning is None or not have.get("partitioning"):
        return []
    if table.partitioning.field.lower() not in {c.lower() for c in have.get("columns", {})}:
        return []
    held, limit = warehouse.partition_count(table.name), warehouse.limits.partitions_per_table
    if held is None or held < 0.8 * limit:
        return []
    return [
        Drift(
            table.name,
            "partitions",
            f"fewer than {limit:,} (the most a table may hold)",
            f"{held:,} ({held / limit:.0%})",
            advice="set time_partitioning.expiration_days so old partitions go, or partition a new "
            "table by a coarser unit (MONTH) and `restore --into` it",
        )
    ]


def fix(
    warehouse: Warehouse, schemas: SchemaSet, found: list[Drift], on_fixed: Callable[[str], None] | None = None
) -> list[str]:
    """Apply the safe fixes among ``found``; the changes made, one line each, each
    also told to ``on_fixed`` as soon as it is made (a later fix may fail)."""
    done: list[str] = []

    def made(line: str) -> None:
        done.append(line)
        if on_fixed is not None:
            on_fixed(line)

    by_table: dict[str, list[Drift]] = {}
    for d in found:
        if d.fix:
            by_table.setdefault(d.table, []).append(d)
    for name, items in by_table.items():
        table = schemas[name]
        if any(d.what == "table" for d in items):
            for line in warehouse.ensure_table(table):
                made(line)
            continue
        options: dict = {}
        pending: list[str] = []  # option changes, made in one update at the end
        for d in items:
            if d.what.startswith("column ") and d.what.endswith(" mode"):
                column = d.what.removeprefix("column ").removesuffix(" mode")
                warehouse.relax_column(name, column)
                made(f"{name}: {d.fix}")
                continue
            if d.what.startswith("column "):
                warehouse.add_column(name, table.field(d.what.removeprefix("column ")))
                made(f"{name}: {d.fix}")
                continue
            if d.what == "partition expiration":
                options["expiration_days"] = table.partitioning.expiration_days if table.partitioning else None
            elif d.what == "require partition filter":
                options["require_partition_filter"] = bool(
                    table.partitioning and table.partitioning.require_partition_filter
                )
            elif d.what == "clustering":
                options["clustering"] = list(table.clustering)
            elif d.what == "labels":
                have = (warehouse.table_options(name) or {}).get("labels", {})
                options["labels"] = {**have, **table.labels}
            pending.append(f"{name}: {d.fix}")
        if options:
            warehouse.update_options(name, options)
            for line in pending:
                made(line)
    return done
