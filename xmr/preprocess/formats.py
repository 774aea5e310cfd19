"""Image formats beyond Pillow's own: HEIC/HEIF (pillow-heif), camera RAW (rawpy), EPS (Ghostscript).

Everything here is imported lazily: ``xmr --help`` and ``xmr status`` load none
of these libraries.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from xmr.errors import MediaError

RAW_EXTENSIONS = frozenset(
    ".cr2 .cr3 .crw .nef .nrw .arw .srf .sr2 .dng .orf .rw2 .raf .pef .ptx .srw .x3f .3fr .fff .erf .kdc .dcr"
    " .mos .mrw .iiq .rwl .gpr".split()
)
NEEDS_GHOSTSCRIPT = "needs Ghostscript"
NEEDS_RAWPY = "camera RAW needs rawpy"

_heif: bool | None = None


def register_heif() -> bool:
    """Register pillow-heif's HEIC/HEIF opener with Pillow once; False when it is not installed."""
    global _heif
    if _heif is None:
        try:
            import pillow_heif
        except ImportError:
            _heif = False
        else:
            pillow_heif.register_heif_opener()
            _heif = True
    return _heif


def has_ghostscript() -> bool:
    """Asked each time (PATH may change); Pillow renders EPS through the ``gs`` program."""
    return shutil.which("gs") is not None


def rawpy_available() -> bool:
    try:
        import rawpy  # noqa: F401
    except ImportError:
        return False
    return True


def is_raw_name(name: str | os.PathLike[str]) -> bool:
    return os.path.splitext(os.fspath(name))[1].lower() in RAW_EXTENSIONS


def load_raw(path: Any, *, max_pixels: int | None = None, name: Any = None) -> Any:
    """Develop a camera RAW file (a path or an open binary file, ``name`` naming it in errors)
    to an 8-bit RGB PIL image (camera white balance, half size: plenty for CLIP)."""
    import numpy as np
    import rawpy
    from PIL import Image

    where = name if name is not None else path
    try:
        with rawpy.imread(path if hasattr(path, "read") else os.fspath(path)) as raw:
            w, h = raw.sizes.width, raw.sizes.height
            if max_pixels is not None and w * h > max_pixels:
                raise MediaError(
                    f"image too large to decode safely: {w}x{h} = {w * h:,} pixels exceeds the limit of "
                    f"{max_pixels:,} pixels (decompression-bomb guard)",
                    path=where,
                )
            rgb = raw.postprocess(use_camera_wb=True, half_size=True, output_bps=8)
    except MediaError:
        raise
    except (rawpy.LibRawFileUnsupportedError, rawpy.LibRawIOError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise MediaError(f"cannot decode camera RAW: {reason}", path=where) from None
    except rawpy.LibRawError as exc:
        raise MediaError(f"cannot decode camera RAW: {type(exc).__name__}", path=where) from None
    return Image.fromarray(np.ascontiguousarray(rgb), "RGB")
