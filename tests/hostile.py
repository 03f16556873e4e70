"""Parts of hostile events: objects whose dunder methods raise or lie,
subclasses of builtins, values at and past every type's limits.

Used by the bad-input corpus and by the Hypothesis strategy that builds
hostile events from them.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping


class Boom(Exception):
    pass


class RaisingRepr:
    def __repr__(self):
        raise Boom("repr")

    def __str__(self):
        raise Boom("str")


class RaisingTz(dt.tzinfo):
    """A tzinfo whose utcoffset() raises, returns None, or returns an int."""

    def __init__(self, mode: str):
        self.mode = mode

    def utcoffset(self, d):
        if self.mode == "raise":
            raise Boom("utcoffset")
        return None if self.mode == "none" else 5

    def dst(self, d):
        return None

    def tzname(self, d):
        return "X"


class KeysRaise(dict):
    def keys(self):
        raise Boom("keys")


class GetitemRaises(Mapping):
    def __getitem__(self, key):
        raise Boom("getitem")

    def __iter__(self):
        return iter(["id"])

    def __len__(self):
        return 1


class LenLies(dict):
    def __len__(self):
        return 10**6


class StrSubRaises(str):
    def __str__(self):
        raise Boom("str")


class IntSubRaises(int):
    def __str__(self):
        raise Boom("str")

    def __repr__(self):
        raise Boom("repr")


class IntSubLies(int):
    def __int__(self):
        return 999

    def __index__(self):
        return 999


class EqRaisesKey(str):
    """A key equal in hash to 'id' whose __eq__ raises."""

    def __hash__(self):
        return hash("id")

    def __eq__(self, other):
        raise Boom("eq")


class ReprHuge:
    def __repr__(self):
        return "x" * 50_000_000


def cyclic_list():
    a: list = []
    a.append(a)
    return a


def deep_list(n):
    v: list = []
    for _ in range(n):
        v = [v]
    return v


BIG_DIGITS = "1" * 5000
# (kind, field, value): values the caller controls that must give a clear
# ValidationError naming the field (strict) or a dead letter (default).
HOSTILE_VALUES = [
    ("4,301-digit string as INTEGER", "i", "9" * 4301),
    ("4,301-digit string as FLOAT", "f", "9" * 4301),
    ("4,301-digit int as INTEGER", "i", 10**4301),
    ("4,301-digit int as FLOAT", "f", 10**4301),
    ("4,301-digit int as STRING", "s", 10**4301),
    ("401-digit int as TIMESTAMP", "ts", 10**400),
    ("'1e999999999' as NUMERIC", "n", "1e999999999"),
    ("'1e999999999' as BIGNUMERIC", "bn", "1e999999999"),
    ("'1e999999999' as INTEGER", "i", "1e999999999"),
    ("'1e1000000' as INTEGER", "i", "1e1000000"),
    ("'1e-999999999' as NUMERIC", "n", "1e-999999999"),
    ("'1e-999999999' as INTEGER", "i", "1e-999999999"),
    ("huge Decimal exponent", "n", decimal.Decimal("1e999999999")),
    ("a million-digit string as NUMERIC", "n", "1" * 1_000_000),
    ("50 MB string in INTEGER", "i", "7" * 50_000_000),
    ("tzinfo whose utcoffset raises", "ts", dt.datetime(2026, 1, 1, tzinfo=RaisingTz("raise"))),
    ("tzinfo whose utcoffset returns an int", "ts", dt.datetime(2026, 1, 1, tzinfo=RaisingTz("int"))),
    ("TIMESTAMP past 9999 in UTC", "ts", "9999-12-31T23:59:59-05:00"),
    ("TIMESTAMP before year 1 in UTC", "ts", "0001-01-01T00:00:00+05:00"),
    (
        "aware datetime past 9999 in UTC",
        "ts",
        dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    ),
    ("epoch millis past 9999", "ts", 253402300800000),
    ("object whose repr and str raise, as STRING", "s", RaisingRepr()),
    ("object whose repr is 50 MB, as INTEGER", "i", ReprHuge()),
    ("cyclic list in REPEATED", "tags", cyclic_list()),
    ("cyclic list in JSON", "j", cyclic_list()),
    ("deep list in JSON", "j", deep_list(50_000)),
    ("GEOGRAPHY of free text", "g", "somewhere nice"),
    ("GEOGRAPHY point out of range", "g", "POINT(200 10)"),
    ("GEOGRAPHY open ring", "g", "POLYGON((0 0, 1 0, 1 1, 0 2))"),
    ("GEOGRAPHY one-point line", "g", "LINESTRING(1 2)"),
    ("GEOGRAPHY with Z", "g", "POINT Z (1 2 3)"),
    ("GEOGRAPHY trailing text", "g", "POINT(1 2) and more"),
    ("GeoJSON Feature", "g", '{"type": "Feature", "geometry": null}'),
    ("GeoJSON latitude 91", "g", '{"type": "Point", "coordinates": [1, 91]}'),
    ("GeoJSON not JSON", "g", '{"type": "Point", '),
    ("GeoJSON NaN coordinate", "g", '{"type": "Point", "coordinates": [NaN, 1]}'),
    ("numpy-like bool in INTEGER", "i", True),
]
