"""Bounded, never-failing text for values a caller handed us.

Error messages, dead-letter reasons and log lines name the offending value
so a person can find it, but the value is the caller's: it may be 50 MB
long, an int whose ``str()`` raises past 4,300 digits, an object whose
``__repr__`` raises, or a string with lone surrogates that SQLite cannot
store. Everything here returns valid UTF-8 text of bounded length, whatever
it is given, and never raises.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

SHOW_CHARS = 60  # of a value quoted in an error message
MAX_REASON = 2000  # characters of a stored dead-letter reason
_BIG_INT_BITS = 200  # about 60 decimal digits: shown as a size, not digits
_SAFE_REPR = (
    decimal.Decimal,
    dt.date,
    dt.datetime,
    dt.time,
    uuid.UUID,
)  # exact types only: subclasses may override repr


def type_name(v: Any) -> str:
    """The value's type: builtins by name, others with their module (``numpy.bool``)."""
    try:
        t = type(v)
        module = getattr(t, "__module__", "") or ""
        name = getattr(t, "__qualname__", None) or t.__name__
        return name if module == "builtins" else f"{module}.{name}"
    except Exception:  # a metaclass that lies
        return "object"


def safe_text(s: Any, limit: int = MAX_REASON) -> str:
    """``s`` (a str) cut to ``limit`` characters, lone surrogates escaped.

    Cutting first keeps the cost bounded however long ``s`` is.
    """
    if type(s) is not str:
        s = show(s, limit)
    cut = len(s) > limit
    text = s[:limit]
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text + f"...[{len(s)} chars]" if cut else text


def show(v: Any, limit: int = SHOW_CHARS) -> str:
    """A short, safe rendering of ``v`` for a message: its repr when that
    is small, else a bounded prefix and the size, else its type name."""
    try:
        t = type(v)
        if t is str or t is bytes:
            if len(v) <= limit:
                return safe_text(repr(v), limit * 4 + 10)
            return safe_text(repr(v[:limit]), limit * 4 + 10) + f"... ({len(v)} {'chars' if t is str else 'bytes'})"
        if t is int:
            if v.bit_length() > _BIG_INT_BITS:
                return f"an int of {v.bit_length()} bits"
            return repr(v)
        if t in (float, bool) or v is None:
            return repr(v)
        if t in _SAFE_REPR:  # stdlib types whose repr is their value
            return safe_text(repr(v), limit)
        if t in (list, tuple, dict, set):
            return f"a {t.__name__} of {len(v)} items"
        # Anything else: its type, never its own (possibly hostile) repr.
        return f"a {type_name(v)}"
    except Exception:
        return f"a {type_name(v)}"
