"""Metadata filters of a search: date taken (else the file's mtime), camera, place.

A filter selects *files* before the vector search: the search then passes the selected
files' vector ids to the vector index as candidates (``VectorIndex.search(candidate_ids=)``),
so the top k holds k matching files however few of them there are, instead of a post-filter
emptying a top k of non-matching ones.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from xmr.errors import UsageError

EARTH_RADIUS_KM = 6371.0088
DEFAULT_NEAR_KM = 1.0


def parse_date(text: str, option: str = "--after") -> datetime:
    """``2024-05-01``, ``2024-05-01T10:00`` (the photo's local time) or with an offset / Z (an instant)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option}: not a date: {text!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None


def parse_near(text: str) -> tuple[float, float, float]:
    """``LAT,LON[,KM]`` -> (lat, lon, radius in km; 1 km when not given)."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3):
        raise UsageError(f"--near: expected LAT,LON[,KM], got {text!r}")
    lat, lon = parts[0], parts[1]
    km = parts[2] if len(parts) == 3 else DEFAULT_NEAR_KM
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or not km > 0:
        raise UsageError(f"--near: out of range: {text!r} (latitude -90..90, longitude -180..180, KM > 0)")
    return lat, lon, km


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@functools.lru_cache(maxsize=256)
def _zone(offset: str) -> timezone:
    sign = -1 if offset.startswith("-") else 1
    hours, minutes = (int(x) for x in offset[1:].split(":"))
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def file_date(mtime_ns: int, meta: Mapping[str, Any]) -> datetime:
    """When a file was taken (aware, its own offset when known), else when it was last modified."""
    taken = meta.get("taken_at")
    if taken:
        with_tz = datetime.fromisoformat(taken)
        offset = meta.get("utc_offset")
        return with_tz.astimezone(_zone(offset)) if offset else with_tz
    return datetime.fromtimestamp(mtime_ns / 1e9, _LOCAL)  # this machine's zone


_LOCAL = datetime.now(UTC).astimezone().tzinfo


@functools.lru_cache(maxsize=256)
def _offset_s(offset: str) -> int:
    return int(_zone(offset).utcoffset(None).total_seconds())


@functools.lru_cache(maxsize=65536)
def _taken_s(taken: str) -> float:
    return datetime.fromisoformat(taken).timestamp()


def _seconds(mtime_ns: int, meta: Mapping[str, Any]) -> tuple[float, float]:
    """(the instant, the wall-clock time where it was taken as if it were UTC), in epoch seconds:
    numbers, so a filter over 100k files compares floats instead of building datetimes."""
    taken = meta.get("taken_at")
    if taken:
        instant = _taken_s(taken)
        offset = meta.get("utc_offset")
        return instant, instant + (_offset_s(offset) if offset else 0)
    instant = mtime_ns / 1e9
    return instant, instant + time.localtime(instant).tm_gmtoff  # this machine's zone


@functools.lru_cache(maxsize=64)
def _bound_s(bound: datetime) -> tuple[bool, float]:
    """(compare with the wall clock?, the bound in epoch seconds). A bound without an offset is a
    wall-clock time: compared with the local time where the photo was taken (the time shown on
    the camera); with an offset, as an instant."""
    if bound.tzinfo is None:
        return True, bound.replace(tzinfo=UTC).timestamp()
    return False, bound.timestamp()


@dataclass(frozen=True)
class Filters:
    after: datetime | None = None  # inclusive
    before: datetime | None = None  # exclusive: --after 2024-05-01 --before 2024-06-01 is May
    camera: str | None = None  # substring of make or model, case-insensitive
    near: tuple[float, float, float] | None = None  # lat, lon, km

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.after, self.before, self.camera, self.near))

    def matches(self, mtime_ns: int, meta: Mapping[str, Any]) -> bool:
        if self.after is not None or self.before is not None:
            instant, wall = _seconds(mtime_ns, meta)
            if self.after is not None:
                use_wall, bound = _bound_s(self.after)
                if (wall if use_wall else instant) < bound:
                    return False
            if self.before is not None:
                use_wall, bound = _bound_s(self.before)
                if (wall if use_wall else instant) >= bound:
                    return False
        if self.camera is not None:
            camera = f"{meta.get('camera_make') or ''} {meta.get('camera_model') or ''}".casefold()
            if self.camera.casefold() not in camera:
                return False
        if self.near is not None:
            lat, lon = meta.get("lat"), meta.get("lon")
            if lat is None or lon is None or haversine_km(self.near[0], self.near[1], lat, lon) > self.near[2]:
                return False
        return True

    def as_dict(self) -> dict[str, Any]:
        return {
            "after": self.after.isoformat() if self.after else None,
            "before": self.before.isoformat() if self.before else None,
            "camera": self.camera,
            "near": list(self.near) if self.near else None,
        }


def filters_from(
    after: str | None = None, before: str | None = None, camera: str | None = None, near: Any = None
) -> Filters:
    """Filters from the CLI's or the API's values (``near``: "LAT,LON[,KM]" or a list of numbers)."""
    for name, value in (("after", after), ("before", before), ("camera", camera)):
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{name} must be a string")
    if isinstance(near, (list, tuple)):
        near = ",".join(str(x) for x in near)
    if near is not None and not isinstance(near, str):
        raise UsageError("near must be 'LAT,LON[,KM]' or [lat, lon, km]")
    return Filters(
        after=parse_date(after, "--after") if after else None,
        before=parse_date(before, "--before") if before else None,
        camera=camera or None,
        near=parse_near(near) if near else None,
    )


@dataclass
class Selection:
    """The indexed files a filter lets through: their paths and contents."""

    paths: set[str]
    hashes: set[str]


def select(rows: Iterable[tuple[str, str | None, int, Mapping[str, Any]]], filters: Filters) -> Selection:
    """``rows``: (path, hash, mtime_ns, metadata) of indexed files (Catalogue.meta_rows)."""
    out = Selection(set(), set())
    for path, content_hash, mtime_ns, meta in rows:
        if filters.matches(mtime_ns, meta):
            out.paths.add(path)
            if content_hash:
                out.hashes.add(content_hash)
    return out


def dates(rows: Iterable[tuple[str, str | None, int, Mapping[str, Any]]]) -> dict[str, datetime]:
    """path -> date taken, else modified, of these rows (Catalogue.meta_rows)."""
    return {path: file_date(mtime_ns, meta) for path, _, mtime_ns, meta in rows}


def sort_key_date(date: datetime | None) -> float:
    """Newest first; undated last."""
    return -date.timestamp() if date is not None else math.inf
