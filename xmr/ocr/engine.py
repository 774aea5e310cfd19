"""Optical character recognition with RapidOCR (PP-OCRv6 detection + recognition, ONNX Runtime).

One engine per process (a decode worker builds it at its first OCR and keeps it). ``read``
finds text lines (detector), caps how many it recognises, and reads them (recogniser) under
a per-file deadline, so a dense texture that yields thousands of boxes costs a bounded time
and memory. ``recognise`` reads given boxes again without the detector: what shows the
snippet of an OCR hit when its text was not stored (the passage rule: boxes, not text).

RapidOCR is imported inside the functions (it pulls OpenCV and ONNX Runtime), and its logger
is silenced: the core never writes to the terminal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Box = tuple[tuple[float, float], ...]  # 4 corner points, pixels of the image given to read()


@dataclass(frozen=True)
class Line:
    """One recognised line of text."""

    text: str
    score: float  # the recogniser's confidence, 0..1
    box: Box


@dataclass
class OcrResult:
    lines: list[Line]
    models: dict[str, str]  # role -> model (det, rec, cls) and the rapidocr version
    truncated: bool  # lines left unread: over max_lines, or past the deadline
    elapsed_s: float
    boxes_found: int = 0  # what the detector found, before the cap
    note: str | None = None  # why it was truncated


@dataclass(frozen=True)
class OcrOptions:
    """How an image is read. ``describe()`` is recorded per file (provenance)."""

    max_side: int = 2048  # a larger image is downscaled first: detection cost grows with its area
    det_side: int = 736  # the detector's input: the shorter side at least this (RapidOCR's default)
    max_lines: int = 300  # lines recognised at most: the largest boxes are kept
    time_limit_s: float = 30.0  # per image; checked between recogniser batches
    min_score: float = 0.5  # lines read with less confidence are dropped
    use_cls: bool = False  # the 180-degree classifier: upside-down text is rare in photos
    rec_batch: int = 8
    # other models than the wheel's PP-OCRv6 small ones: paths to RapidOCR ONNX files (another
    # script's recogniser, say PP-OCRv5 Korean or Cyrillic), XMR_OCR_REC_MODEL / XMR_OCR_DET_MODEL
    det_model: str | None = None
    rec_model: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "max_side": self.max_side,
            "det_side": self.det_side,
            "max_lines": self.max_lines,
            "time_limit_s": self.time_limit_s,
            "min_score": self.min_score,
            "use_cls": self.use_cls,
            **({"det_model": self.det_model} if self.det_model else {}),
            **({"rec_model": self.rec_model} if self.rec_model else {}),
        }


DEFAULT_OPTIONS = OcrOptions()
_LOCK = threading.Lock()
_ENGINES: dict[tuple[int, str | None, str | None], _Engine] = {}


def _silence() -> None:
    """RapidOCR logs at INFO on import and construction, to its own handler: mute it."""
    log = logging.getLogger("RapidOCR")
    log.setLevel(logging.CRITICAL + 1)
    log.disabled = True
    log.propagate = False


class _Engine:
    """The RapidOCR pipeline parts of one detector size, built once per process."""

    def __init__(self, det_side: int, det_model: str | None = None, rec_model: str | None = None):
        _silence()
        from rapidocr import RapidOCR

        _silence()
        params: dict[str, Any] = {
            "Global.log_level": "critical",
            "Det.limit_side_len": det_side,
            # the detector keeps at most this many contours: a dense texture stops here
            "Det.max_candidates": 1000,
        }
        if det_model:
            params["Det.model_path"] = det_model
        if rec_model:
            params["Rec.model_path"] = rec_model
        self.paths = {"det": det_model, "rec": rec_model}
        self.ocr = RapidOCR(params=params)
        _silence()
        self.det = self.ocr._load_det_model()
        self.rec = self.ocr._load_rec_model()
        self._cls: Any = None

    @property
    def cls(self) -> Any:
        if self._cls is None:
            self._cls = self.ocr._load_cls_model()
        return self._cls

    def models(self, use_cls: bool) -> dict[str, str]:
        from rapidocr._version import __version__

        cfg = self.ocr.cfg
        out = {"engine": f"rapidocr {__version__}"}
        for role, part in (("det", cfg.Det), ("rec", cfg.Rec), ("cls", cfg.Cls)):
            if self.paths.get(role):
                out[role] = str(self.paths[role])
            elif role != "cls" or use_cls:
                out[role] = f"{_name(part.ocr_version)}_{role}_{_name(part.model_type)} ({_name(part.lang_type)})"
        return out


def _name(value: Any) -> str:
    return str(getattr(value, "value", value))


def engine(options: OcrOptions = DEFAULT_OPTIONS) -> _Engine:
    """This process's engine for these options (built at the first call; about a second)."""
    key = (options.det_side, options.det_model, options.rec_model)
    with _LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            eng = _ENGINES[key] = _Engine(*key)
        return eng


def _as_bgr(image: Any, max_side: int) -> tuple[Any, float]:
    """(a BGR uint8 array at most ``max_side`` on its longer side, the scale applied)."""
    import numpy as np

    if hasattr(image, "convert"):  # PIL
        img = image if image.mode == "RGB" else image.convert("RGB")
        scale = min(1.0, max_side / max(img.size))
        if scale < 1.0:
            from PIL import Image

            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[2] < 3:
            raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
        arr = arr[:, :, :3].astype(np.uint8, copy=False)
        scale = min(1.0, max_side / max(arr.shape[:2]))
        if scale < 1.0:
            import cv2

            h, w = arr.shape[:2]
            arr = cv2.resize(arr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr[:, :, ::-1]), scale


def _area(box: Any) -> float:
    import numpy as np

    x, y = np.asarray(box, dtype=np.float64).T
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _crops(bgr: Any, boxes: Sequence[Any]) -> list[Any]:
    import numpy as np
    from rapidocr.utils.process_img import get_rotate_crop_image

    h, w = bgr.shape[:2]
    out = []
    for box in boxes:
        pts = np.asarray(box, dtype=np.float32).copy()
        pts[:, 0] = pts[:, 0].clip(0, w - 1)
        pts[:, 1] = pts[:, 1].clip(0, h - 1)
        out.append(get_rotate_crop_image(bgr, pts))
    return out


def _recognise(
    eng: _Engine, crops: list[Any], opts: OcrOptions, deadline: float
) -> tuple[list[tuple[str, float]], bool]:
    """(text, score) per crop, in order; stops at the deadline (the rest: empty, truncated)."""
    from rapidocr.ch_ppocr_rec import TextRecInput

    out: list[tuple[str, float]] = []
    for start in range(0, len(crops), opts.rec_batch):
        if time.monotonic() > deadline:
            return out + [("", 0.0)] * (len(crops) - len(out)), True
        # a degenerate box crops to nothing: read a blank in its place (it yields no text)
        part = [c if c.size and min(c.shape[:2]) > 0 else _blank() for c in crops[start : start + opts.rec_batch]]
        if opts.use_cls:
            part = list(eng.cls(part).img_list)
        res = eng.rec(TextRecInput(img=part))
        out.extend((str(t), float(s)) for t, s in zip(res.txts, res.scores, strict=True))
    return out, False


def _blank() -> Any:
    import numpy as np

    return np.full((8, 8, 3), 255, np.uint8)


def read(image: Any, *, options: OcrOptions | None = None) -> OcrResult:
    """The text lines of ``image`` (a PIL image or an HxWx3 uint8 RGB array), in reading order.

    Boxes are in pixels of the image as given (before any downscaling)."""
    opts = options or DEFAULT_OPTIONS
    t0 = time.monotonic()
    deadline = t0 + opts.time_limit_s
    eng = engine(opts)
    bgr, scale = _as_bgr(image, opts.max_side)
    det = eng.det(bgr)
    boxes = [] if det.boxes is None else list(det.boxes)
    found = len(boxes)
    truncated, note = False, None
    if found > opts.max_lines:
        # keep the largest boxes (a dense texture's specks are small), back in reading order
        keep = sorted(sorted(range(found), key=lambda i: -_area(boxes[i]))[: opts.max_lines])
        boxes = [boxes[i] for i in keep]
        truncated, note = True, f"{found} text boxes found, {opts.max_lines} read"
    read_, late = _recognise(eng, _crops(bgr, boxes), opts, deadline)
    if late:
        truncated, note = True, f"time limit ({opts.time_limit_s:g} s) reached"
    lines = []
    for box, (text, score) in zip(boxes, read_, strict=True):
        text = " ".join(text.split())
        if not text or score < opts.min_score:
            continue
        pts = tuple((round(float(x) / scale, 1), round(float(y) / scale, 1)) for x, y in box)
        lines.append(Line(text, round(score, 4), pts))
    return OcrResult(lines, eng.models(opts.use_cls), truncated, time.monotonic() - t0, found, note)


def recognise(image: Any, boxes: Sequence[Box], *, options: OcrOptions | None = None) -> list[Line]:
    """Read the given boxes again (no detector): cheap, for a snippet shown at search time."""
    import numpy as np

    opts = options or DEFAULT_OPTIONS
    eng = engine(opts)
    bgr, scale = _as_bgr(image, opts.max_side)
    scaled = [np.asarray(b, dtype=np.float32) * scale for b in boxes]
    read_, _ = _recognise(eng, _crops(bgr, scaled), opts, float("inf"))
    return [Line(" ".join(t.split()), round(s, 4), tuple(b)) for b, (t, s) in zip(boxes, read_, strict=True)]
