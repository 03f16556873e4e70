"""Named, parameterized queries that travel with a schema set: ``queries/NAME.sql``.

A query file is BigQuery SQL whose leading comment says what it returns and
declares its parameters, one line each::

    -- One user's analytics over the last N days.
    -- @param user_id STRING  the app's user id
    -- @param days INT64 = 30  how many days back
    SELECT ... FROM user_interactions WHERE user_id = @user_id ...

Tables are named bare: they resolve in the configured dataset. Values are
always sent as BigQuery query parameters, never formatted into the SQL.
Parameter types: STRING, INT64, FLOAT64, BOOL, DATE, TIMESTAMP.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import SchemaError, ValidationError

TYPES = ("STRING", "INT64", "FLOAT64", "BOOL", "DATE", "TIMESTAMP")
_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,62}")
_PARAM_LINE_RE = re.compile(
    r"^--\s*@param\s+(?P<name>[A-Za-z_]\w*)\s+(?P<type>[A-Z0-9]+)(?:\s*=\s*(?P<default>\S+))?(?:\s+(?P<doc>.*))?$"
)
_USED_RE = re.compile(r"(?<![@\w])@([A-Za-z_]\w*)")
_STRINGS_RE = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`|--[^\n]*|#[^\n]*")


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: object = None
    required: bool = True
    doc: str = ""


@dataclass(frozen=True)
class NamedQuery:
    """A query file: its name, what it returns, its parameters and its SQL."""

    name: str
    description: str
    params: tuple[Param, ...]
    sql: str
    source: str

    def values(self, given: Mapping[str, object]) -> dict[str, object]:
        """Every parameter's value from ``given`` (strings are parsed by type), defaults
        filling the rest; ValidationError naming any unknown, missing or bad one."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValidationError(
                f"query {self.name} has no parameter {', '.join(unknown)} (it takes: {', '.join(known) or 'none'})"
            )
        out: dict[str, object] = {}
        for p in self.params:
            if p.name in given:
                out[p.name] = convert(p, given[p.name])
            elif p.required:
                raise ValidationError(f"query {self.name} needs --param {p.name}=... ({p.type}: {p.doc or 'no doc'})")
            else:
                out[p.name] = p.default
        return out


def convert(p: Param, value: object) -> object:
    """``value`` (a string from the command line, or a Python value) as ``p``'s type."""
    try:
        if p.type == "STRING":
            if not isinstance(value, str):
                raise TypeError("expected text")
            return value
        if p.type == "INT64":
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise TypeError("expected an integer")
            return int(value)
        if p.type == "FLOAT64":
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise TypeError("expected a number")
            return float(value)
        if p.type == "BOOL":
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return text in ("true", "1", "yes")
        if p.type == "DATE":
            if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
                return value
            return dt.date.fromisoformat(str(value))
        if p.type == "TIMESTAMP":
            stamp = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"parameter {p.name} ({p.type}): {value!r} is not valid: {exc}") from None
    raise ValidationError(f"parameter {p.name}: unknown type {p.type}")  # pragma: no cover - checked on load


def load_query_file(path: Path) -> NamedQuery:
    """Parse and check one query file; SchemaError naming the file and line of a problem."""
    name = path.stem
    if not _NAME_RE.fullmatch(name):
        raise SchemaError("a query's file name is lowercase letters, digits and '-' (NAME.sql)", source=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"cannot read: {exc}", source=str(path)) from None
    params: list[Param] = []
    doc: list[str] = []
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped.startswith("--"):
            break
        if "@param" in stripped:
            m = _PARAM_LINE_RE.match(stripped)
            if not m or m["type"] not in TYPES:
                raise SchemaError(
                    f"line {number}: write '-- @param NAME TYPE [= DEFAULT] [what it is]' with TYPE one of {', '.join(TYPES)}",
                    source=str(path),
                )
            p = Param(m["name"], m["type"], doc=(m["doc"] or "").strip())
            if m["default"] is not None:
                try:
                    p = Param(p.name, p.type, convert(p, m["default"]), required=False, doc=p.doc)
                except ValidationError as exc:
                    raise SchemaError(f"line {number}: default: {exc}", source=str(path)) from None
            if any(q.name == p.name for q in params):
                raise SchemaError(f"line {number}: parameter {p.name} is declared twice", source=str(path))
            params.append(p)
        else:
            doc.append(stripped.lstrip("-").strip())
    sql = text.strip()
    used = set(_USED_RE.findall(_STRINGS_RE.sub(" ", sql)))
    declared = {p.name for p in params}
    if used - declared:
        raise SchemaError(f"uses @{', @'.join(sorted(used - declared))} without declaring it", source=str(path))
    if declared - used:
        raise SchemaError(f"declares {', '.join(sorted(declared - used))} but never uses it", source=str(path))
    if not any(line.strip() and not line.strip().startswith("--") for line in lines):
        raise SchemaError("no SQL after the comment", source=str(path))
    return NamedQuery(name, " ".join(d for d in doc if d), tuple(params), sql, str(path))


def load_queries(directory: Path) -> dict[str, NamedQuery]:
    """The queries of a schema set's directory (``queries/*.sql``), by name."""
    folder = directory / "queries"
    if not folder.is_dir():
        return {}
    return {q.name: q for q in (load_query_file(p) for p in sorted(folder.glob("*.sql")))}
