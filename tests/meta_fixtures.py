"""Generated files with known metadata: JPEGs with EXIF written by Pillow, audio tagged by mutagen."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def _dms(value: float) -> tuple[Fraction, Fraction, Fraction]:
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    s = Fraction(round(((value - d) * 60 - m) * 60 * 1000), 1000)
    return Fraction(d), Fraction(m), s


def exif_bytes(
    *,
    taken: str | None = None,
    offset: str | None = None,
    make: str | None = None,
    model: str | None = None,
    lens: str | None = None,
    gps: tuple[float, float] | None = None,
    orientation: int | None = None,
) -> bytes:
    """EXIF as a camera writes it: DateTimeOriginal "YYYY:MM:DD HH:MM:SS" + OffsetTimeOriginal."""
    from PIL import Image

    exif = Image.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    if orientation:
        exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    if taken:
        sub[0x9003] = taken
    if offset:
        sub[0x9011] = offset
    if lens:
        sub[0xA434] = lens
    if gps:
        g = exif.get_ifd(0x8825)
        g[1] = "N" if gps[0] >= 0 else "S"
        g[2] = _dms(gps[0])
        g[3] = "E" if gps[1] >= 0 else "W"
        g[4] = _dms(gps[1])
    return exif.tobytes()


def photo(path: Path, seed: int, size: int = 64, **exif: object) -> Path:
    """A distinct picture (smooth random blobs) saved as JPEG with the given EXIF."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((size, size), Image.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=92, exif=exif_bytes(**exif) if exif else b"")  # type: ignore[arg-type]
    return path


def tagged_flac(path: Path, *, title: str, artist: str, album: str, date: str, seed: int = 0) -> Path:
    import mutagen.flac
    import soundfile as sf

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (rng.standard_normal(16000) * 0.1).astype(np.float32), 16000, format="FLAC")
    f = mutagen.flac.FLAC(path)
    f["title"], f["artist"], f["album"], f["date"] = title, artist, album, date
    f.save()
    return path
