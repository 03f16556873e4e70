"""A compiled fast path for events that need little conversion.

Most events an app appends are already in canonical form: ``str`` for
STRING, ``int`` for INTEGER, a float or an epoch number for TIMESTAMP. For
them the whole check of the plain-typed columns can run in msgspec's C code,
as one ``msgspec.convert`` into a Struct generated for the table, and the
row is then encoded by the same call that checks its strings are valid
UTF-8. That takes about two thirds of the time of the generated Python of
:mod:`bqspool.schemas.coerce`, and validation sits on the append hot path.

The fast path never decides an error and never converts differently: any
event it does not accept exactly (a missing or null REQUIRED field, a
numeric string, a bool where a number goes, an unknown field, a lone
surrogate, a ``str`` subclass, ...) makes it return None, and the caller
runs the full coercion, which converts or raises the precise error. Where
both accept an event they produce the same bytes (tests check this).

Columns of the plain types (STRING, INTEGER, FLOAT, BOOLEAN) are checked by
msgspec with the same bounds as the full path (length, int64 range, finite
floats). Every other column is taken as is and converted afterwards by the
full path's own converter for that column.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, NamedTuple

import msgspec

from .definition import EVENT_ID, Field

_INT64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
# NaN fails both bounds and infinities fail one: only finite floats pass.
_FINITE = Annotated[float, msgspec.Meta(ge=-1.7976931348623157e308, le=1.7976931348623157e308)]


def _plain_type(f: Field) -> Any:
    """The msgspec type that accepts exactly the canonical values of ``f``, or None."""
    if f.repeated:
        return None
    if f.type == "STRING":
        return str if f.max_length is None else Annotated[str, msgspec.Meta(max_length=f.max_length)]
    if f.type == "INTEGER":
        return _INT64
    if f.type == "FLOAT":
        return _FINITE
    if f.type == "BOOLEAN":
        return bool
    return None


class FastPath(NamedTuple):
    """The compiled fast path of one table; see the module docstring."""

    one: Callable[[Any, str], bytes | None]
    """``(event, event_id)``: the stored row as UTF-8 JSON, or None for the full path."""
    lines: Callable[[list, list], bytes | None]
    """``(events, event_ids)``: their stored rows as JSON lines, each ending in
    a newline (what joining ``one``'s rows would give), or None as soon as one
    event is not for the fast path. One ``msgspec`` call converts the list and
    one encodes it, which costs about two thirds of calling ``one`` per event."""
    row_type: type  # for tests and debugging


def compile_fast(
    fields: tuple[Field, ...],
    *,
    unknown: str,
    convert: Callable[[Field, str], Callable[[Any], Any]],
    json_chunks: Callable | None,
) -> FastPath:
    """Generate the fast path for a table of ``fields``.

    ``convert(field, unknown)`` is the full path's converter of a column
    (:func:`.coerce._compile_field`), which the fast path calls for every
    column it does not check itself; ``json_chunks`` the standard library's
    C JSON encoder, or None. Passed in, so this module imports no converter.
    """
    env: dict[str, Any] = {"_EVENT_ID": EVENT_ID, "_chunks": json_chunks, "_join": "".join, "_flat_json": _flat_json}
    struct_fields, rename, post = _row_fields(fields, unknown, convert, env)
    row_type = msgspec.defstruct(
        "Row",
        struct_fields,
        kw_only=True,  # REQUIRED columns may follow NULLABLE ones
        omit_defaults=True,  # a null column is left out, as the full path does
        forbid_unknown_fields=unknown == "error",
        rename=rename,
    )
    env.update(
        _convert=msgspec.convert,
        _Row=row_type,
        _Rows=list[row_type],  # type: ignore[valid-type]
        _encode=msgspec.json.encode,
        _encode_lines=msgspec.json.Encoder().encode_lines,
        _null=_null,
    )
    src = _FAST_SOURCE.format(
        one="\n".join("        " + line for line in post), many="\n".join("            " + line for line in post)
    )
    exec(compile(src, f"<bqspool fast row {fields[0].name if fields else ''}>", "exec"), env)
    return FastPath(env["one"], env["lines"], row_type)


# The generated functions; {one} and {many} are the statements that finish a
# converted struct ``s`` (columns the fast path does not check itself).
_FAST_SOURCE = """\
def one(event, event_id):
    # The buffer assigns _event_id; an event carrying one is the full path's to judge.
    if type(event) is not dict or _EVENT_ID in event:
        return None
    try:
        s = _convert(event, _Row)
        s.eid = event_id
{one}
        # Encoding is also the UTF-8 check: a lone surrogate raises here.
        return _encode(s)
    # Whatever fails here, the full path converts or reports precisely.
    except Exception:
        return None

def lines(events, event_ids):
    for event in events:
        if type(event) is not dict or _EVENT_ID in event:
            return None
    try:
        rows = _convert(events, _Rows)
        for s, event_id in zip(rows, event_ids):
            s.eid = event_id
{many}
        return _encode_lines(rows)
    except Exception:
        return None
"""


def _row_fields(
    fields: tuple[Field, ...], unknown: str, convert: Callable[[Field, str], Callable[[Any], Any]], env: dict[str, Any]
) -> tuple[list[tuple], dict[str, str], list[str]]:
    """The row struct's fields and their renames, and the statements finishing a
    converted struct; the converters those statements call go into ``env``."""
    struct_fields: list[tuple] = [("eid", str, "")]
    rename = {"eid": EVENT_ID}
    post: list[str] = []  # statements finishing a converted struct ``s``
    for i, f in enumerate(fields):
        attr = f"f{i}"
        rename[attr] = f.name
        plain = _plain_type(f)
        if plain is not None:
            typ = plain if f.required else (plain | None)
        else:
            # Taken as is, then converted by the column's own converter; the
            # commonest cases are inlined, with the converter as fallback.
            typ = Any
            env[f"_c{i}"] = convert(f, unknown)
            conv = _inline(f, i, json_inline=env["_chunks"] is not None)
            post += [f"x = s.{attr}", "if x is not None:", f"    s.{attr} = {conv}"]
            if f.required:  # a null REQUIRED value must fail ("REQUIRED field is null")
                post += ["else:", "    _null()"]
        if f.required:
            struct_fields.append((attr, typ))
        else:
            struct_fields.append((attr, typ, None))
    return struct_fields, rename, post


# Epoch seconds in [year 1, 1e11) are what _epoch_us converts with a plain
# multiplication (1e11 and above are milliseconds); the same expression here
# skips two calls. Both bounds are exact in a float.
_TS_SECONDS = "-62135596800 <= x < 100000000000"


def _inline(f: Field, i: int, *, json_inline: bool) -> str:
    """An expression converting a non-null ``x`` of ``f`` exactly as its converter ``_c{i}`` does.

    ``json_inline``: whether the standard library's C JSON encoder (``_chunks``) is there to inline.
    """
    if f.repeated:
        return f"_c{i}(x)"
    if f.type == "TIMESTAMP":
        return (
            f"round(x * 1000000) if type(x) is float and {_TS_SECONDS} else "
            f"x * 1000000 if type(x) is int and {_TS_SECONDS} else _c{i}(x)"
        )
    if f.type == "JSON" and json_inline:
        # A flat object by msgspec; else _to_json: the standard library's C
        # encoder, then the UTF-8 check.
        return f"t if (t := _flat_json(x)) is not None else t if (t := _join(_chunks(x, 0))).isascii() else _c{i}(x)"
    return f"_c{i}(x)"


_FLAT_VALUES = frozenset({str, int, bool, type(None)})
_msgspec_json = msgspec.json.encode


def _flat_json(x: Any) -> str | None:
    """``x`` as JSON text if it is a dict of str keys to str/int/bool/None, else None.

    For those values msgspec writes exactly what the standard library's
    encoder writes (with the separators ``_to_json`` uses), in about half
    the time. Floats are left out: msgspec writes exponents as ``1e16``
    where Python writes ``1e+16``. A lone surrogate makes msgspec raise,
    which sends the event to the full path.
    """
    if type(x) is not dict:
        return None
    for k, v in x.items():
        if type(k) is not str or type(v) not in _FLAT_VALUES:
            return None
    return _msgspec_json(x).decode("utf-8")


def _null() -> Any:
    raise ValueError("REQUIRED field is null")
