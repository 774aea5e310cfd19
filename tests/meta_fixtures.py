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


def text_pdf(path: Path, text: str, *, title: str | None = None, author: str | None = None) -> Path:
    """A one-page PDF whose page shows ``text`` (Helvetica) and, optionally, an Info dictionary.
    Written by hand: no PDF writer is a dependency."""
    stream = f"BT /F1 12 Tf 20 100 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 200] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    info = ""
    if title or author:
        objs.append(f"<< /Title ({title or ''}) /Author ({author or ''}) /Keywords (ledger, port) >>".encode())
        info = f" /Info {len(objs)} 0 R"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    return path
