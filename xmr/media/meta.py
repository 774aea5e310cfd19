"""Descriptive metadata of a file: when and where a photo was taken, with what, a song's tags,
a document's title. Read by the media kinds' ``metadata`` functions in the decode workers
(module-level, picklable); heavy imports inside. Every reader returns a plain dict whose keys
are among ``FIELDS`` (missing ones left out) and never raises on a damaged file: metadata is
a bonus, a file without it is still indexed.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

# the columns of the catalogue's file_meta table (xmr/catalogue/schema.py, migration 6)
FIELDS = (
    "taken_at",  # UTC ISO 8601: when the photo was taken (EXIF DateTimeOriginal), a recording's date
    "utc_offset",  # "+02:00": the offset it was taken at (EXIF OffsetTimeOriginal), when known
    "camera_make",
    "camera_model",
    "lens",
    "lat",
    "lon",
    "orientation",
    "title",
    "artist",
    "album",
    "author",
    "tags",  # keywords, subject, genre: free text, comma separated
)

# EXIF tags (Pillow numbers them; names from the EXIF 2.32 standard)
_MAKE, _MODEL, _ORIENTATION, _DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_DATETIME_ORIGINAL, _OFFSET_ORIGINAL, _LENS_MODEL = 0x9003, 0x9011, 0xA434
_IMAGE_DESCRIPTION, _XP_KEYWORDS = 0x010E, 0x9C9E
_OFFSET_RE = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


def _text(value: Any) -> str | None:
    """A tag value as clean text (EXIF strings are NUL padded; some are bytes)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value if str(v).strip())
    text = str(value).replace("\x00", "").strip()
    return text[:500] or None


def exif_datetime(value: str, offset: str | None) -> tuple[str, str | None] | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" (+ "+HH:MM") -> (UTC ISO, offset). Without an offset the
    time is the camera's clock, taken as UTC (there is nothing better to go by)."""
    try:
        local = datetime.strptime(value.strip()[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    tz, off = UTC, None
    m = _OFFSET_RE.match((offset or "").strip())
    if m:
        delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        tz = timezone(-delta if m.group(1) == "-" else delta)
        off = f"{m.group(1)}{m.group(2)}:{m.group(3)}"
    return local.replace(tzinfo=tz).astimezone(UTC).isoformat(timespec="seconds"), off


def _degrees(dms: Any, ref: Any) -> float | None:
    try:
        d, m, s = (float(x) for x in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = d + m / 60.0 + s / 3600.0
    if _text(ref) in ("S", "W"):
        value = -value
    return round(value, 7)


def image_metadata(path: str) -> dict[str, Any]:
    """EXIF: date taken (+ offset), camera, lens, GPS position, orientation, keywords."""
    from PIL import Image

    out: dict[str, Any] = {}
    with contextlib.suppress(Exception), Image.open(path) as img:
        exif = img.getexif()
        sub = exif.get_ifd(_EXIF_IFD)
        gps = exif.get_ifd(_GPS_IFD)
        taken = sub.get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
        if taken:
            parsed = exif_datetime(str(taken), _text(sub.get(_OFFSET_ORIGINAL)))
            if parsed:
                out["taken_at"], out["utc_offset"] = parsed
        for key, value in (
            ("camera_make", exif.get(_MAKE)),
            ("camera_model", exif.get(_MODEL)),
            ("lens", sub.get(_LENS_MODEL)),
            ("title", exif.get(_IMAGE_DESCRIPTION)),
        ):
            if _text(value):
                out[key] = _text(value)
        keywords = exif.get(_XP_KEYWORDS)
        if isinstance(keywords, (bytes, tuple)):
            raw = bytes(keywords)
            out["tags"] = raw.decode("utf-16-le", "replace").replace("\x00", "").replace(";", ", ").strip() or None
        if exif.get(_ORIENTATION):
            out["orientation"] = int(exif[_ORIENTATION])
        if gps:
            lat, lon = _degrees(gps.get(2), gps.get(1)), _degrees(gps.get(4), gps.get(3))
            if lat is not None and lon is not None and -90 <= lat <= 90 and -180 <= lon <= 180:
                out["lat"], out["lon"] = lat, lon
    return {k: v for k, v in out.items() if v is not None}


def _first(tags: Any, *keys: str) -> str | None:
    for key in keys:
        with contextlib.suppress(Exception):
            value = tags.get(key)
            if value is not None:
                value = getattr(value, "text", value)  # ID3 frames
                text = _text(value if isinstance(value, (list, tuple)) else [value])
                if text:
                    return text
    return None


def tag_date(value: str | None) -> str | None:
    """A tag date ("2021-06-03", "2021-06-03T10:00:00") -> UTC ISO; a year alone is not a date."""
    if not value:
        return None
    m = re.match(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?", value.strip())
    if not m:
        return None
    try:
        parts = [int(g) if g else 0 for g in m.groups()]
        return datetime(*parts, tzinfo=UTC).isoformat(timespec="seconds")  # type: ignore[misc]
    except ValueError:
        return None


def audio_metadata(path: str) -> dict[str, Any]:
    """Tags through mutagen (ID3, Vorbis comments, MP4 atoms): title, artist, album, date, genre."""
    import mutagen

    out: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        f = mutagen.File(path, easy=True)
        tags = getattr(f, "tags", None)
        if tags is None:
            return out
        out["title"] = _first(tags, "title", "TIT2")
        out["artist"] = _first(tags, "artist", "TPE1", "albumartist")
        out["album"] = _first(tags, "album", "TALB")
        out["tags"] = _first(tags, "genre", "TCON")
        out["taken_at"] = tag_date(_first(tags, "date", "TDRC", "originaldate"))
    return {k: v for k, v in out.items() if v is not None}


def pdf_metadata(path: str) -> dict[str, Any]:
    import pypdfium2 as pdfium

    out: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        pdf = pdfium.PdfDocument(path)
        try:
            info = pdf.get_metadata_dict(skip_empty=True)
        finally:
            pdf.close()
        out["title"] = _text(info.get("Title"))
        out["author"] = _text(info.get("Author"))
        tags = ", ".join(t for t in (_text(info.get("Subject")), _text(info.get("Keywords"))) if t)
        out["tags"] = tags or None
    return {k: v for k, v in out.items() if v is not None}


# a video's container tags (lower-cased keys: Matroska writes them in capitals)
_VIDEO_DATE_KEYS = ("com.apple.quicktime.creationdate", "creation_time", "date_recorded", "date")
_VIDEO_PLACE_KEYS = ("com.apple.quicktime.location.iso6709", "location", "location-eng")
_VIDEO_MAKE_KEYS = ("com.apple.quicktime.make", "com.android.manufacturer", "make")
_VIDEO_MODEL_KEYS = ("com.apple.quicktime.model", "com.android.model", "model")
_ISO6709_RE = re.compile(r"^([+-])(\d{2,6}(?:\.\d*)?)([+-])(\d{3,7}(?:\.\d*)?)")


def iso6709(value: str | None) -> tuple[float, float] | None:
    """An ISO 6709 point ("+52.3700-004.8950+010.000/"; degrees, or degrees and minutes
    (+DDMM.M), or degrees, minutes and seconds (+DDMMSS.S)) -> (lat, lon) in degrees."""
    m = _ISO6709_RE.match((value or "").strip())
    if not m:
        return None

    def degrees(sign: str, digits: str, width: int) -> float | None:
        whole, _, frac = digits.partition(".")
        frac = "." + (frac or "0")
        if len(whole) == width:
            d = float(whole + frac)
        elif len(whole) == width + 2:
            d = float(whole[:width]) + float(whole[width:] + frac) / 60.0
        elif len(whole) == width + 4:
            minutes, seconds = float(whole[width : width + 2]), float(whole[width + 2 :] + frac)
            d = float(whole[:width]) + minutes / 60.0 + seconds / 3600.0
        else:
            return None
        return -d if sign == "-" else d

    lat, lon = degrees(m.group(1), m.group(2), 2), degrees(m.group(3), m.group(4), 3)
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return round(lat, 7), round(lon, 7)


def video_datetime(value: str | None) -> tuple[str, str | None] | None:
    """A container date ("2024-05-01T08:00:00.000000Z", Apple's "2024-05-01T10:00:00+0200")
    -> (UTC ISO, offset or None). A time without an offset is taken as UTC: MP4's creation
    time is UTC by the standard."""
    text = (value or "").strip()
    m = re.match(r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?\s*(Z|[+-]\d{2}:?\d{2})?$", text)
    if not m:
        return None
    try:
        local = datetime(*(int(g) for g in m.groups()[:6]))  # type: ignore[misc]
    except ValueError:
        return None
    if local.year < 1971:  # an unset MP4 time (0: 1904) or a camera clock never set
        return None
    tz, off = UTC, None
    zone = _OFFSET_RE.match(m.group(7) or "")
    if zone:
        delta = timedelta(hours=int(zone.group(2)), minutes=int(zone.group(3)))
        tz = timezone(-delta if zone.group(1) == "-" else delta)
        off = f"{zone.group(1)}{zone.group(2)}:{zone.group(3)}"
    return local.replace(tzinfo=tz).astimezone(UTC).isoformat(timespec="seconds"), off


def video_metadata(path: str) -> dict[str, Any]:
    """A video's container tags through PyAV: when it was recorded (with its offset when the
    phone wrote one), where (ISO 6709), the camera's make and model."""
    import av

    out: dict[str, Any] = {}
    with contextlib.suppress(Exception), av.open(path, metadata_errors="ignore") as c:
        tags = {str(k).lower(): str(v) for k, v in c.metadata.items()}
        for s in c.streams.video:  # a track's creation time when the container has none
            for k, v in s.metadata.items():
                tags.setdefault(str(k).lower(), str(v))
        for key in _VIDEO_DATE_KEYS:
            parsed = video_datetime(tags.get(key))
            if parsed:
                out["taken_at"], out["utc_offset"] = parsed
                break
        for key in _VIDEO_PLACE_KEYS:
            point = iso6709(tags.get(key))
            if point:
                out["lat"], out["lon"] = point
                break
        out["camera_make"] = next((_text(tags[k]) for k in _VIDEO_MAKE_KEYS if _text(tags.get(k))), None)
        out["camera_model"] = next((_text(tags[k]) for k in _VIDEO_MODEL_KEYS if _text(tags.get(k))), None)
        out["title"] = _text(tags.get("title"))
    return {k: v for k, v in out.items() if v is not None}


_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)


def html_title(path: str) -> dict[str, Any]:
    import html

    with contextlib.suppress(OSError), open(path, "rb") as f:
        m = _TITLE_RE.search(f.read(65536))
        if m:
            title = _text(html.unescape(m.group(1).decode("utf-8", "replace")))
            if title:
                return {"title": " ".join(title.split())}
    return {}


def text_metadata(path: str) -> dict[str, Any]:
    """PDF document info, or an HTML page's <title>; plain text has none."""
    with contextlib.suppress(OSError), open(path, "rb") as f:
        head = f.read(1024)
        if head.startswith(b"%PDF"):
            return pdf_metadata(path)
        if b"<html" in head.lower() or b"<!doctype html" in head.lower() or b"<title" in head.lower():
            return html_title(path)
    return {}
