"""A structural check of GEOGRAPHY values: WKT or GeoJSON, in BigQuery's range.

BigQuery parses a GEOGRAPHY column only inside the load job, and a job
that meets one value it cannot parse fails whole. So the writer checks the
shape on append, with the standard library alone: the geometry kinds
BigQuery accepts, two coordinates per point (three are allowed in GeoJSON,
where the third is an altitude), longitudes in [-180, 180] and latitudes
in [-90, 90], enough points per line and ring, closed rings, and bounded
nesting. It is a check of form, not of geometry (a self-intersecting
polygon passes here): what it refuses, BigQuery would refuse too.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_NESTING = 16  # GEOMETRYCOLLECTIONs inside each other
_TOKEN = re.compile(r"\s*(?:([A-Za-z]+)|([(),])|([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))")
_GEOJSON_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2, "MultiPolygon": 3}


class _Invalid(Exception):
    pass


def geography_problem(text: str) -> str | None:
    """What is wrong with ``text`` as a GEOGRAPHY value, or None if its form is right."""
    try:
        if text.lstrip().startswith("{"):
            _geojson(text)
        else:
            _Wkt(text).parse()
    except _Invalid as exc:
        return str(exc)
    return None


def _position(lon: Any, lat: Any) -> tuple[float, float]:
    for v in (lon, lat):
        if type(v) not in (int, float) or not math.isfinite(v):
            raise _Invalid("a coordinate is not a finite number")
    if not -180 <= lon <= 180:
        raise _Invalid(f"longitude {lon} is outside [-180, 180]")
    if not -90 <= lat <= 90:
        raise _Invalid(f"latitude {lat} is outside [-90, 90]")
    return (float(lon), float(lat))


def _line(points: list, what: str) -> None:
    if len(points) < 2:
        raise _Invalid(f"a {what} needs at least 2 points")


def _ring(points: list) -> None:
    if len(points) < 4:
        raise _Invalid("a polygon ring needs at least 4 points")
    if points[0] != points[-1]:
        raise _Invalid("a polygon ring is not closed (its first and last points differ)")


class _Wkt:
    def __init__(self, text: str):
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        end = len(text.rstrip())
        while pos < end:
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise _Invalid(f"unexpected character at position {pos}")
            kind = "word" if m.group(1) else "punct" if m.group(2) else "number"
            self.tokens.append((kind, m.group(m.lastindex or 0)))
            pos = m.end()
        self.i = 0

    def _next(self) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            raise _Invalid("WKT ends too early")
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def _expect(self, punct: str) -> None:
        if self._next() != ("punct", punct):
            raise _Invalid(f"WKT expected {punct!r} at token {self.i}")

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def parse(self) -> None:
        if not self.tokens:
            raise _Invalid("empty")
        self._geometry(0)
        if self.i != len(self.tokens):
            raise _Invalid(f"WKT has extra text after the geometry (token {self.i})")

    def _empty(self) -> bool:
        tok = self._peek()
        if tok is not None and tok[0] == "word" and tok[1].upper() == "EMPTY":
            self.i += 1
            return True
        return False

    def _list(self, item) -> list:
        self._expect("(")
        out = [item()]
        while self._peek() == ("punct", ","):
            self.i += 1
            out.append(item())
        self._expect(")")
        return out

    def _coord(self) -> tuple[float, float]:
        nums = []
        while (tok := self._peek()) is not None and tok[0] == "number":
            nums.append(float(tok[1]))
            self.i += 1
        if len(nums) != 2:
            raise _Invalid(f"a WKT point needs 2 coordinates (longitude latitude), got {len(nums)}")
        return _position(*nums)

    def _points(self) -> list:
        return self._list(self._coord)

    def _polygon(self) -> list:
        rings = self._list(self._points)
        for r in rings:
            _ring(r)
        return rings

    def _linestring(self) -> list:
        points = self._points()
        _line(points, "linestring")
        return points

    def _multipoint_item(self):
        if self._peek() == ("punct", "("):
            self.i += 1
            c = self._coord()
            self._expect(")")
            return c
        return self._coord()

    def _geometry(self, depth: int) -> None:
        if depth > MAX_NESTING:
            raise _Invalid("geometry collections nested too deeply")
        kind, word = self._next()
        if kind != "word":
            raise _Invalid("WKT must start with a geometry type (POINT, LINESTRING, POLYGON, ...)")
        word = word.upper()
        parts = {
            "POINT": lambda: self._list(self._coord),
            "LINESTRING": self._linestring,
            "POLYGON": self._polygon,
            "MULTIPOINT": lambda: self._list(self._multipoint_item),
            "MULTILINESTRING": lambda: self._list(self._linestring),
            "MULTIPOLYGON": lambda: self._list(self._polygon),
            "GEOMETRYCOLLECTION": lambda: self._list(lambda: self._geometry(depth + 1)),
        }
        if word not in parts:
            raise _Invalid(f"unknown WKT geometry type {word[:30]!r}")
        if self._empty():
            return
        got = parts[word]()
        if word == "POINT" and len(got) != 1:
            raise _Invalid("a POINT has exactly one position")


def _geojson(text: str) -> None:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _Invalid(f"GeoJSON is not valid JSON ({type(exc).__name__})") from None
    _geojson_geometry(obj, 0)


def _geojson_positions(coords: Any, depth: int) -> Any:
    """Check nested coordinate arrays ``depth`` levels above positions; returns them as tuples."""
    if type(coords) is not list:
        raise _Invalid("GeoJSON coordinates must be arrays")
    if depth == 0:
        if len(coords) not in (2, 3):
            raise _Invalid("a GeoJSON position has 2 or 3 numbers")
        if len(coords) == 3 and (type(coords[2]) not in (int, float) or not math.isfinite(coords[2])):
            raise _Invalid("a coordinate is not a finite number")
        return _position(coords[0], coords[1])
    return [_geojson_positions(c, depth - 1) for c in coords]


def _geojson_geometry(obj: Any, nesting: int) -> None:
    if nesting > MAX_NESTING:
        raise _Invalid("geometry collections nested too deeply")
    if type(obj) is not dict:
        raise _Invalid("GeoJSON must be an object")
    kind = obj.get("type")
    if kind == "GeometryCollection":
        geoms = obj.get("geometries")
        if type(geoms) is not list:
            raise _Invalid("a GeometryCollection needs a 'geometries' array")
        for g in geoms:
            _geojson_geometry(g, nesting + 1)
        return
    if kind not in _GEOJSON_DEPTH:
        raise _Invalid(
            "GeoJSON 'type' must be a geometry type (Point, LineString, Polygon, Multi..., "
            "GeometryCollection); features are not geographies"
        )
    coords = _geojson_positions(obj.get("coordinates"), _GEOJSON_DEPTH[kind])
    if kind == "LineString":
        _line(coords, "LineString")
    elif kind == "MultiLineString":
        for line in coords:
            _line(line, "LineString")
    elif kind == "Polygon":
        for r in coords:
            _ring(r)
    elif kind == "MultiPolygon":
        for poly in coords:
            for r in poly:
                _ring(r)
