"""Image decoding and CLIP preprocessing without torch.

``load_image`` turns any file Pillow can read into an RGB image the way a
person would see it (EXIF orientation applied, transparency over white, first
frame of an animation, 16-bit and float images scaled to 8 bits).
``ImagePreprocessor`` then reproduces open_clip's evaluation transform with
Pillow and numpy only, so it can run in worker processes that never import
torch; it is exact (same Pillow resize, same float32 arithmetic) and the tests
compare it with open_clip's own transform.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xmr.errors import MediaError
from xmr.preprocess import read_error

# Pillow's own hard limit (2 x its warning threshold) as our default: photos
# from 100+ MP cameras pass, crafted "decompression bombs" do not.
DEFAULT_MAX_PIXELS = 178_956_970

# Draft decoding keeps at least this factor above the target size so that the
# final antialiased resize, not the JPEG DCT scaling, decides the result
# (the same "reducing gap" Pillow's thumbnail() uses).
DRAFT_GAP = 2

_ORIENTATION_TAG = 0x0112
_WHITE = (255, 255, 255, 255)
_PIL_LIMIT_LOCK = threading.Lock()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


@contextmanager
def _pil_limit_relaxed(max_pixels: int | None):
    """Keep Pillow's global MAX_IMAGE_PIXELS from overriding *our* limit.

    Pillow raises for images above 2 x MAX_IMAGE_PIXELS (a process-wide value
    anyone may change). When that would reject an image our limit allows, lift
    it for the duration of the decode; our own check on the declared size runs
    either way.
    """
    glob = Image.MAX_IMAGE_PIXELS
    needed = glob is not None and (max_pixels is None or max_pixels > 2 * glob)
    if not needed:
        yield
        return
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # corrupt EXIF must not make the image unreadable
        return 1


def _maybe_draft(img: Image.Image, target_size: tuple[int, int] | None) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the source is big.

    ``target_size`` is (width, height) of the displayed (EXIF-rotated) image.
    """
    if target_size is None or img.format not in ("JPEG", "MPO"):
        return
    tw, th = target_size
    if _orientation(img) in (5, 6, 7, 8):  # stored sideways
        tw, th = th, tw
    want = (max(1, tw * DRAFT_GAP), max(1, th * DRAFT_GAP))
    w, h = img.size
    if min(w // want[0], h // want[1]) >= 2:
        img.draft("RGB", want)


def _scaled_to_l(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float images -> 8-bit greyscale.

    Pillow's own convert() clips these at 255 (a 16-bit photo turns white), so
    scale by the value range the mode implies instead.
    """
    arr = np.asarray(img)
    mode = img.mode
    if mode.startswith("I;16"):
        out = arr.astype(np.float64) / 257.0
    else:
        a = arr.astype(np.float64)
        finite = np.isfinite(a)
        if not finite.all():
            a = np.where(finite, a, 0.0)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            out = a * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            out = a
        elif mode == "I" and lo >= 0.0 and hi <= 65535.0:
            out = a / 257.0
        else:  # unknown range: stretch to the full 8 bits
            out = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparent pixels are composited onto white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        has_alpha = img.has_transparency_data
        img = img.convert("RGBA" if has_alpha else "RGB")
        if not has_alpha:
            return img
        mode = "RGBA"
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        if mode == "La":  # premultiplied: Pillow converts it to RGBA only via LA
            img = img.convert("LA")
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _scaled_to_l(img).convert("RGB")
    return img.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV, RGBX


def load_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    target_size: tuple[int, int] | None = None,
    name: str | os.PathLike[str] | None = None,
) -> Image.Image:
    """Decode ``path`` (a path or an open binary file) to an upright RGB image (first frame if animated).

    ``max_pixels``: refuse images whose declared width x height exceeds it
    (None: no limit), independently of Pillow's global setting.
    ``target_size``: (width, height) the caller will resize to; when given,
    large JPEGs are decoded at a reduced scale (still >= 2x the target).
    ``name``: the file's name when ``path`` is an open file; formats told apart by their
    extension (camera RAW) and error messages use it.
    Raises MediaError with a one-line reason.
    """
    from xmr.preprocess import formats

    where = name if name is not None else path
    if isinstance(where, (str, os.PathLike)) and formats.is_raw_name(where):
        return to_rgb(formats.load_raw(path, max_pixels=max_pixels, name=where))
    formats.register_heif()
    try:
        with warnings.catch_warnings():
            # EXIF/ICC/palette warnings and Pillow's bomb *warning* are noise here
            warnings.simplefilter("ignore")
            with _pil_limit_relaxed(max_pixels), Image.open(path) as img:
                w, h = img.size
                if max_pixels is not None and w * h > max_pixels:
                    raise MediaError(
                        f"image too large to decode safely: {w}x{h} = {w * h:,} pixels exceeds the "
                        f"limit of {max_pixels:,} pixels (decompression-bomb guard)",
                        path=where,
                    )
                _maybe_draft(img, target_size)
                img.load()
                try:
                    upright = ImageOps.exif_transpose(img)
                except Exception:  # unreadable EXIF: keep the stored orientation
                    upright = img
                rgb = to_rgb(upright)
                if rgb is img:
                    rgb = img.copy()  # detach from the file that is about to close
                return rgb
    except MediaError:
        raise
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise read_error(exc, where) from None
    except UnidentifiedImageError:
        raise MediaError("cannot decode image: unrecognised or unsupported image format", path=where) from None
    except Image.DecompressionBombError as exc:  # a frame inside the file, beyond the declared size
        raise MediaError(f"image too large to decode safely: {_one_line(exc)}", path=where) from None
    except MemoryError:
        raise MediaError("cannot decode image: not enough memory", path=where) from None
    except Exception as exc:  # truncated data, broken streams, unsupported codecs ...
        raise MediaError(f"cannot decode image: {_one_line(exc)}", path=where) from None


def _as_triple(value: Any) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    vals = tuple(float(v) for v in value)
    if len(vals) == 1:
        return vals * 3
    if len(vals) != 3:
        raise ValueError(f"expected 3 per-channel values, got {len(vals)}")
    return vals  # type: ignore[return-value]


def _as_hw(size: Any) -> tuple[int, int]:
    if isinstance(size, (int, float)):
        return int(size), int(size)
    vals = tuple(int(v) for v in size)
    if len(vals) == 1:
        return vals[0], vals[0]
    if len(vals) != 2:
        raise ValueError(f"image size must be an int or (height, width), got {size!r}")
    return vals  # type: ignore[return-value]


def _center_crop_or_pad(img: Image.Image, out_hw: tuple[int, int], fill: int) -> Image.Image:
    # same arithmetic as torchvision's center_crop / open_clip's center_crop_or_pad
    crop_h, crop_w = out_hw
    w, h = img.size
    if crop_w > w or crop_h > h:
        border = (
            (crop_w - w) // 2 if crop_w > w else 0,
            (crop_h - h) // 2 if crop_h > h else 0,
            (crop_w - w + 1) // 2 if crop_w > w else 0,
            (crop_h - h + 1) // 2 if crop_h > h else 0,
        )
        img = ImageOps.expand(img, border=border, fill=(int(fill),) * 3)
        w, h = img.size
        if (w, h) == (crop_w, crop_h):
            return img
    top = int(round((h - crop_h) / 2.0))
    left = int(round((w - crop_w) / 2.0))
    return img.crop((left, top, left + crop_w, top + crop_h))


def _resize_hw(img: Image.Image, out_hw: list[int], resample: int) -> Image.Image:
    if [img.height, img.width] == out_hw:  # torchvision skips no-op resizes
        return img
    return img.resize((out_hw[1], out_hw[0]), resample)


def _keep_ratio_hw(img: Image.Image, target_hw: tuple[int, int], longest: bool) -> list[int]:
    # open_clip's ResizeKeepRatio.get_params without the random parts
    h, w = img.height, img.width
    ratio_h, ratio_w = h / target_hw[0], w / target_hw[1]
    lf = 1.0 if longest else 0.0
    ratio = max(ratio_h, ratio_w) * lf + min(ratio_h, ratio_w) * (1.0 - lf)
    return [round(x * 1.0 / ratio) for x in (h, w)]


_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "random": Image.Resampling.BICUBIC,
}  # open_clip evaluates "random" as bicubic


@dataclass(frozen=True)
class ImagePreprocessor:
    """Picklable ``(path) -> float32 (3, H, W)``, equal to open_clip's eval transform."""

    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    draft: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _as_hw(self.size))
        object.__setattr__(self, "mean", _as_triple(self.mean))
        object.__setattr__(self, "std", _as_triple(self.std))
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"unsupported interpolation {self.interpolation!r}; use bicubic or bilinear")
        if self.resize_mode not in ("shortest", "longest", "squash"):
            raise ValueError(f"unsupported resize_mode {self.resize_mode!r}")
        if any(s == 0 for s in self.std) or any(not math.isfinite(v) for v in self.mean + self.std):
            raise ValueError("mean/std must be finite and std non-zero")

    @classmethod
    def from_open_clip(cls, cfg: Mapping[str, Any] | Any, **overrides: Any) -> ImagePreprocessor:
        """From open_clip's ``model.visual.preprocess_cfg`` dict or a ``PreprocessCfg``."""
        get = cfg.get if isinstance(cfg, Mapping) else (lambda k, d=None: getattr(cfg, k, d))
        mode = get("mode", "RGB")
        if mode not in (None, "RGB"):
            raise ValueError(f"unsupported preprocessing colour mode {mode!r}")
        kwargs: dict[str, Any] = {
            "size": get("size", 224),
            "mean": get("mean") if get("mean") is not None else (0.48145466, 0.4578275, 0.40821073),
            "std": get("std") if get("std") is not None else (0.26862954, 0.26130258, 0.27577711),
            "interpolation": get("interpolation") or "bicubic",
            "resize_mode": get("resize_mode") or "shortest",
            "fill_color": int(get("fill_color", 0) or 0),
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    def describe(self) -> dict[str, Any]:
        """The settings that determine the pixels, for provenance records."""
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    def provenance(self) -> dict[str, Any]:
        """What the catalogue records per model: ``describe()`` without the decode guard
        ``max_pixels``, which refuses an image but does not change its pixels."""
        return {k: v for k, v in self.describe().items() if k != "max_pixels"}

    def __call__(self, path: str | os.PathLike[str] | Path) -> np.ndarray:
        return self.decode(path)[1]

    def decode(self, path: str | os.PathLike[str] | Path) -> tuple[Image.Image, np.ndarray]:
        """(the decoded upright RGB image, its pixels as ``__call__`` returns them): for a caller
        that also reads the image (the OCR gate), one decode for both. A large JPEG is decoded
        at a reduced scale, still at least twice ``size``."""
        target = (self.size[1], self.size[0]) if self.draft else None
        img = load_image(path, max_pixels=self.max_pixels, target_size=target)
        try:
            return img, self.from_pil(img)
        except MediaError:
            raise
        except Exception as exc:
            raise MediaError(f"cannot preprocess image: {_one_line(exc)}", path=path) from None

    def from_pil(self, img: Image.Image) -> np.ndarray:
        """Resize, crop/pad and normalise an already decoded image."""
        img = to_rgb(img)
        resample = _RESAMPLE[self.interpolation]
        if self.resize_mode == "squash":
            img = _resize_hw(img, list(self.size), resample)
        elif self.resize_mode == "longest":
            img = _resize_hw(img, _keep_ratio_hw(img, self.size, longest=True), resample)
            img = _center_crop_or_pad(img, self.size, self.fill_color)
        else:
            th, tw = self.size
            if th == tw:
                # torchvision Resize(int): shortest edge -> size, long edge truncated
                h, w = img.height, img.width
                short, long = (w, h) if w <= h else (h, w)
                new_short, new_long = th, int(th * long / short)
                new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
                img = _resize_hw(img, [new_h, new_w], resample)
            else:
                # open_clip uses ResizeKeepRatio here, which is always bicubic
                img = _resize_hw(img, _keep_ratio_hw(img, self.size, longest=False), Image.Resampling.BICUBIC)
            img = _center_crop_or_pad(img, self.size, 0)
        arr = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
        # the same float32 operations, in the same order, as ToTensor + Normalize
        arr /= np.float32(255)
        arr -= np.asarray(self.mean, dtype=np.float32)[:, None, None]
        arr /= np.asarray(self.std, dtype=np.float32)[:, None, None]
        return np.ascontiguousarray(arr)
