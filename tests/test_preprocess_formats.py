"""Image formats beyond Pillow's own: HEIC (pillow-heif), camera RAW (rawpy), XPM, XBM, EPS (Ghostscript)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fixtures.make_fixtures import draw_scene
from xmr.errors import MediaError
from xmr.preprocess import formats
from xmr.preprocess.image import load_image

MEDIA = Path(__file__).resolve().parent.parent / "fixtures" / "media"


def _mean_abs_diff(a: object, b: object) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def test_heic_decodes_to_the_picture_it_was_made_from() -> None:
    img = load_image(MEDIA / "images/photo.heic")
    assert img.mode == "RGB" and img.size == (96, 64)
    assert _mean_abs_diff(img, draw_scene(25, (96, 64))) < 12  # lossy, but the same picture


def test_xpm_xbm_and_eps_decode() -> None:
    xpm = load_image(MEDIA / "images/scene.xpm")
    assert xpm.size == (24, 16) and _mean_abs_diff(xpm, draw_scene(22, (24, 16))) < 25  # 6 colours
    xbm = load_image(MEDIA / "images/glyph.xbm")
    assert xbm.size == (32, 24) and set(np.unique(np.asarray(xbm))) == {0, 255}
    assert xbm.getpixel((5, 10)) == (255, 255, 255) and xbm.getpixel((16, 22)) == (0, 0, 0)
    eps = load_image(MEDIA / "images/drawing.eps")  # rendered by Ghostscript
    assert eps.mode == "RGB" and eps.size == (48, 32)
    assert _mean_abs_diff(eps, draw_scene(24, (48, 32))) < 12


def test_camera_raw_is_developed_with_rawpy() -> None:
    img = load_image(MEDIA / "images/bayer.dng")
    assert img.mode == "RGB" and img.size == (32, 24)  # half size
    arr = np.asarray(img, dtype=np.float32)
    left, right = arr[:, :4].mean(axis=(0, 1)), arr[:, -4:].mean(axis=(0, 1))
    assert right[0] > left[0] + 100  # red grows left to right
    assert right[2] < left[2] - 30  # blue falls
    top, bottom = arr[:4].mean(axis=(0, 1)), arr[-4:].mean(axis=(0, 1))
    assert bottom[1] > top[1] + 50  # green grows downwards


def test_camera_raw_errors(tmp_path: Path) -> None:
    fake = tmp_path / "DSC_0001.NEF"
    fake.write_bytes(b"II*\x00" + bytes(200))
    with pytest.raises(MediaError, match="cannot decode camera RAW") as exc:
        load_image(fake)
    assert exc.value.path == str(fake)
    with pytest.raises(MediaError, match="decompression-bomb guard"):
        load_image(MEDIA / "images/bayer.dng", max_pixels=100)


def test_heif_registration_is_lazy_and_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "_heif", None)
    calls = []
    import pillow_heif

    monkeypatch.setattr(pillow_heif, "register_heif_opener", lambda: calls.append(1))
    assert formats.register_heif() and formats.register_heif()
    assert calls == [1]


def test_ghostscript_is_looked_up_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert formats.has_ghostscript()
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not formats.has_ghostscript()
