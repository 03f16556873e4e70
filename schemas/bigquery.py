"""Table definitions to BigQuery's REST JSON (and back), with no Google import."""

from __future__ import annotations

from typing import Any

from .definition import EVENT_ID, Field, TableDef, parse_field, parse_table


def field_to_json(f: Field) -> dict[str, Any]:
    """One field as BigQuery's REST ``TableFieldSchema``."""
    out: dict[str, Any] = {"name": f.name, "type": f.type, "mode": f.mode}
    if f.fields:
        out["fields"] = [field_to_json(s) for s in f.fields]
    if f.description:
        out["description"] = f.description
    # The REST API carries these int64 values as strings.
    if f.max_length is not None:
        out["maxLength"] = str(f.max_length)
    if f.precision is not None:
        out["precision"] = str(f.precision)
    if f.scale is not None:
        out["scale"] = str(f.scale)
    return out


def schema_to_json(table: TableDef) -> list[dict[str, Any]]:
    """The table's ``schema.fields`` list, ``_event_id`` included."""
    return [field_to_json(f) for f in table.fields]


def table_to_json(table: TableDef, project: str, dataset: str) -> dict[str, Any]:
    """A REST ``Table`` resource for ``tables.insert``."""
    body: dict[str, Any] = {
        "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table.name},
        "schema": {"fields": schema_to_json(table)},
    }
    if table.description:
        body["description"] = table.description
    if table.partitioning:
        p = table.partitioning
        tp: dict[str, Any] = {"type": p.type, "field": p.field}
        if p.expiration_days is not None:
            tp["expirationMs"] = str(int(p.expiration_days * 86_400_000))
        body["timePartitioning"] = tp
        if p.require_partition_filter:
            body["requirePartitionFilter"] = True
    if table.clustering:
        body["clustering"] = {"fields": list(table.clustering)}
    if table.labels:
        body["labels"] = dict(table.labels)
    return body


def table_from_json(body: dict[str, Any]) -> TableDef:
    """Parse a REST ``Table`` resource back into a :class:`TableDef`."""
    fields = [f for f in body["schema"]["fields"] if f["name"] != EVENT_ID]
    raw: dict[str, Any] = {"fields": fields}
    if body.get("description"):
        raw["description"] = body["description"]
    tp = body.get("timePartitioning")
    if tp:
        raw["time_partitioning"] = {
            "field": tp["field"],
            "type": tp.get("type", "DAY"),
            "require_partition_filter": bool(body.get("requirePartitionFilter", False)),
        }
        if "expirationMs" in tp:
            days = int(tp["expirationMs"]) / 86_400_000
            raw["time_partitioning"]["expiration_days"] = int(days) if days.is_integer() else days
    if body.get("clustering"):
        raw["clustering"] = list(body["clustering"]["fields"])
    if body.get("labels"):
        raw["labels"] = dict(body["labels"])
    return parse_table(body["tableReference"]["tableId"], raw)


__all__ = ["field_to_json", "schema_to_json", "table_to_json", "table_from_json", "parse_field"]
