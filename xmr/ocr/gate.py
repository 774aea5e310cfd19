"""Whether an image likely holds text: the cheap gate of ``--ocr auto``, run in the decode workers.

Chosen from the candidates ``benchmarks/ocr.py --parts gate`` measures (benchmarks/results/ocr_gate.txt):
a cascade, cheapest stage first, each deciding what it can. It reads the image the CLIP
preprocessor decoded (xmr.media.builtin.decode_image), EXIF included: no second decode.

1. **EXIF.** A screenshot tool's name in the Software / UserComment tags: likely. EXIF never
   rules text out (photos of receipts and signs carry a camera's tags).
2. **Screenshot colours** (~0.3 ms): one exact colour over 30 % of a pixel grid is a flat UI
   background (a photo's sensor noise and JPEG leave no colour that common): likely, even
   where its text is too small for the later stages' reduced sizes, when at least 8 small
   marks (letters) stand off it. A flat image with fewer (a blank scan, a logo, a drawing)
   goes on to the next stages.
3. **Sharp edges** (a 256 px grey thumbnail, ~1.5 ms): text is strokes, sharp and contrasted.
   Fewer than 0.4 % of pixels on such an edge: no text (smooth photos: sky, bokeh, blur).
4. **Dense blocks** (the same thumbnail, ~0.2 ms): text is strokes packed close, so a 16 px
   block holding letters has many edge pixels (a gradient >= 40, so that faded ink counts).
   Under 20 % in the densest block: no text, only lines (a horizon, a rail, a contour).
5. **The PP-OCRv6 detector at 320 px** (long side, one thread, ~30 ms), then a **probe read**:
   the recogniser reads the start of the widest region found; likely when it reads at least 3
   letters or digits at a mean confidence of 0.8. The probe is what rejects windows, bricks,
   fences and foliage, where the bare detector (and statistics alone) fire on 20-50 % of photos,
   each such false positive costing a full OCR (about a second) later.

Measured on generated sets: recall 1.00 on clean and 0.93 on degraded text images, no false
positive on 90 photo-like images; on the 200 photos of the cost benchmark about a third reach
the detector, and the gate costs about 18 ms CPU per photo on the busy 2-core machine
(it was 30-37 ms with a second decode and without the block stage).
The models are RapidOCR's wheel's files, run with ONNX Runtime directly (one thread each: the
decode workers run in parallel); the recogniser loads at the first probe only.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

THUMB_SIDE = 256  # the statistics' thumbnail, long side in pixels
EDGE_LEVEL = 80  # a 3x3 morphological gradient at least this: a sharp, high-contrast edge
BLOCK, BLOCK_LEVEL = 16, 40  # the block stage: 16 px blocks of the thumbnail, edges >= 40
PROBE_SIDE = 1024  # the detector's boxes are cropped for the probe read from the image at this size
PROBE_WIDTH = 256  # a crop is read at 48 px high; only its first this many px (~8 letters)
DET_MODEL, REC_MODEL = "PP-OCRv6_det_small.onnx", "PP-OCRv6_rec_small.onnx"


@dataclass(frozen=True)
class GateConfig:
    """The cascade's stages and thresholds (None or 0: the stage is off)."""

    exif: bool = True  # a screenshot tool's EXIF tag: likely
    screen_share: float | None = 0.3  # one exact colour covers this share: a screenshot, likely ...
    screen_marks: int = 8  # ... when at least this many small marks (letters) stand off that colour
    min_edge_share: float | None = 0.004  # fewer sharp-edge pixels: no text (the detector is skipped)
    min_block_edges: float | None = 0.2  # the densest block has a smaller share of edge pixels: no text
    det_side: int | None = 320  # the detector's input, long side (None: statistics decide alone)
    region_score: float = 0.6  # mean text probability of a region that counts
    probe: int = 1  # widest regions read by the recogniser; 0: any region means likely
    probe_score: float = 0.8  # a probe read counts with this mean character confidence ...
    probe_chars: int = 3  # ... and at least this many letters or digits


DEFAULT_CONFIG = GateConfig()

_SCREENSHOT_WORDS = ("screenshot", "screen shot", "snipping", "greenshot", "flameshot", "spectacle", "shutter")
_SOFTWARE, _USER_COMMENT, _EXIF_IFD = 0x0131, 0x9286, 0x8769


@dataclass(frozen=True)
class GateDecision:
    likely: bool
    reason: str


def exif_hint(exif: Any) -> str | None:
    """The screenshot tool an image's EXIF names, or None (``exif``: a Pillow Exif or a tag mapping)."""
    if exif is None:
        return None
    values = []
    try:
        values.append(exif.get(_SOFTWARE))
        sub = exif.get_ifd(_EXIF_IFD) if hasattr(exif, "get_ifd") else exif
        values.append(sub.get(_USER_COMMENT))
        if isinstance(exif, Mapping):
            values.extend(exif.get(k) for k in ("Software", "UserComment"))
    except Exception:  # corrupt EXIF: no hint
        return None
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("latin-1", "replace")
        if isinstance(value, str):
            low = value.lower()
            for word in _SCREENSHOT_WORDS:
                if word in low:
                    return value.strip()[:60]
    return None


def rgb_array(image: Any) -> Any:
    """An HxWx3 uint8 RGB array of a PIL image or an array (one copy of a PIL image at most):
    every stage works on it, so the image is converted once."""
    import numpy as np

    if hasattr(image, "convert"):
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return arr[:, :, :3].astype(np.uint8, copy=False)


def grey_thumb(rgb: Any, side: int) -> Any:
    """A greyscale uint8 thumbnail at most ``side`` px on its long side (never upscaled):
    box-averaged by an integer factor first (keeps thin strokes' contrast), then Pillow's
    antialiased bilinear."""
    import cv2
    import numpy as np
    from PIL import Image

    h, w = rgb.shape[:2]
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    k = max(h, w) // (2 * side)
    if k >= 2:
        grey = cv2.resize(grey, (w // k, h // k), interpolation=cv2.INTER_AREA)
    s = side / max(grey.shape)
    if s >= 1:
        return grey
    img = Image.fromarray(grey).resize((max(1, round(grey.shape[1] * s)), max(1, round(grey.shape[0] * s))),
                                       Image.BILINEAR)
    return np.asarray(img)


def edge_stats(grey: Any) -> tuple[float, float]:
    """(share of pixels on a sharp, high-contrast edge (3x3 morphological gradient >= EDGE_LEVEL),
    the share of pixels on an edge >= BLOCK_LEVEL in the densest BLOCK x BLOCK px block).

    Text is strokes packed close: a block holding letters is dense with edges, faded ink's
    included (hence the lower level); a horizon, a rail or a lone contour crosses a block as
    a line a few pixels thick."""
    import cv2
    import numpy as np

    if not grey.size:
        return 0.0, 0.0
    grad = cv2.morphologyEx(grey, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    share = float(np.count_nonzero(grad >= EDGE_LEVEL)) / grad.size
    h, w = grad.shape
    hb, wb = max(1, h // BLOCK), max(1, w // BLOCK)
    soft = (grad[: hb * BLOCK, : wb * BLOCK] >= BLOCK_LEVEL).astype(np.float32)
    bh, bw = soft.shape[0] // hb, soft.shape[1] // wb
    densest = float(soft[: hb * bh, : wb * bw].reshape(hb, bh, wb, bw).mean(axis=(1, 3)).max())
    return share, densest


def edge_share(grey: Any) -> float:
    """Share of pixels on a sharp, high-contrast edge (3x3 morphological gradient >= EDGE_LEVEL)."""
    return edge_stats(grey)[0]


def _model(name: str) -> Any:
    """An ONNX Runtime session, one thread, for a model file of RapidOCR's wheel."""
    import importlib.util
    from pathlib import Path

    import onnxruntime as ort

    spec = importlib.util.find_spec("rapidocr")  # where its models are; importing it is not needed
    if spec is None or spec.origin is None:
        raise RuntimeError("rapidocr is not installed")
    opts = ort.SessionOptions()
    # the decode workers already run in parallel: one thread each
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    path = Path(spec.origin).parent / "models" / name
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class _Models:
    """The PP-OCRv6 detector and recogniser of RapidOCR's wheel, run directly (no pipeline):
    the detector on a small image, the recogniser on a few crops."""

    def __init__(self) -> None:
        self.det = _model(DET_MODEL)
        self._rec: Any = None
        self._chars: list[str] = []

    def rec(self) -> tuple[Any, list[str]]:
        if self._rec is None:  # loaded at the first probe only: most photos never need it
            self._rec = _model(REC_MODEL)
            table = self._rec.get_modelmeta().custom_metadata_map.get("character", "")
            self._chars = ["", *table.splitlines(), " "]  # CTC blank first, space last (PaddleOCR's layout)
        return self._rec, self._chars


_LOCK = threading.Lock()
_MODELS: list[_Models] = []


def models() -> _Models:
    """This process's gate models (the detector at the first use, ~0.2 s; the recogniser at the first probe)."""
    with _LOCK:
        if not _MODELS:
            _MODELS.append(_Models())
        return _MODELS[0]


def _within(rgb: Any, side: int) -> tuple[Any, int]:
    """(``rgb`` box-averaged by an integer factor to about ``side`` px on its long side, the factor)."""
    import cv2

    h, w = rgb.shape[:2]
    k = max(h, w) // side
    if k < 2:
        return rgb, 1
    return cv2.resize(rgb, (w // k, h // k), interpolation=cv2.INTER_AREA), k


def detect(rgb: Any, side: int, min_score: float = 0.0) -> list[tuple[float, Any]]:
    """[(mean text probability, 4 corners in ``rgb``'s pixels)] of the regions the detector finds
    at ``side`` px (long side) with a mean probability of at least ``min_score``, widest first.
    ``rgb``: an HxWx3 uint8 RGB array."""
    import cv2
    import numpy as np

    h, w = rgb.shape[:2]
    s = side / max(h, w)
    rh, rw = max(32, round(h * s / 32) * 32), max(32, round(w * s / 32) * 32)
    x = cv2.resize(_within(rgb, PROBE_SIDE)[0], (rw, rh), interpolation=cv2.INTER_AREA)[:, :, ::-1]  # BGR
    x = (x.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]
    m = models()
    prob = m.det.run(None, {m.det.get_inputs()[0].name: x})[0][0, 0]
    mask = (prob > 0.3).astype(np.uint8)  # RapidOCR's binarisation threshold
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    # each region's mean probability at once: the outlines below only for those that count
    scores = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=n) / np.maximum(stats[:, 4], 1)
    out = []
    for i in range(1, n):
        x0, y0, bw, bh, area = (int(v) for v in stats[i])
        score = float(scores[i])
        if area < 6 or score < min_score:
            continue
        ys, xs = np.nonzero(labels[y0 : y0 + bh, x0 : x0 + bw] == i)
        (cx, cy), (rw_, rh_), angle = cv2.minAreaRect(np.stack([xs + x0, ys + y0], 1).astype(np.float32))
        d = (rw_ * rh_) * 1.6 / max(2 * (rw_ + rh_), 1e-6)  # DB's unclip: the map shrinks text by this
        box = cv2.boxPoints(((cx, cy), (rw_ + 2 * d, rh_ + 2 * d), angle))
        box = box * np.array([w / rw, h / rh], np.float32)
        out.append((score, box))
    out.sort(key=lambda r: -max(np.linalg.norm(r[1][0] - r[1][1]), np.linalg.norm(r[1][1] - r[1][2])))
    return out


def _crop(img: Any, box: Any) -> Any:
    """The box's pixels, rectified, the text running left to right."""
    import cv2
    import numpy as np

    pts = np.asarray(box, np.float32)
    # start from the top-left corner, clockwise, the longer side first
    i = int(np.argmin(pts.sum(axis=1)))
    pts = np.roll(pts, -i, axis=0)
    if np.linalg.norm(pts[1] - pts[0]) < np.linalg.norm(pts[3] - pts[0]):
        pts = pts[[0, 3, 2, 1]]
    cw = max(1, int(np.linalg.norm(pts[1] - pts[0])))
    ch = max(1, int(np.linalg.norm(pts[3] - pts[0])))
    dst = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32)
    return cv2.warpPerspective(img, cv2.getPerspectiveTransform(pts, dst), (cw, ch), borderMode=cv2.BORDER_REPLICATE)


def probe_read(rgb: Any, boxes: list[Any]) -> list[tuple[str, float]]:
    """The recogniser on a few crops (boxes in ``rgb``'s pixels, read from the image at about
    PROBE_SIDE px): (text, mean confidence of its characters) each."""
    import cv2
    import numpy as np

    rec, chars = models().rec()
    small, factor = _within(rgb, PROBE_SIDE)
    out = []
    for box in boxes:
        crop = _crop(small, np.asarray(box, np.float32) / factor)[:, :, ::-1]  # the model reads BGR
        ch, cw = crop.shape[:2]
        # the start of the line is enough to tell text from texture, at a fraction of the cost
        crop = crop[:, : max(1, int(PROBE_WIDTH * ch / 48))]
        width = int(max(16, round(48 * crop.shape[1] / max(ch, 1))))
        x = cv2.resize(np.ascontiguousarray(crop), (width, 48), interpolation=cv2.INTER_LINEAR)
        x = (x.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]
        probs = rec.run(None, {rec.get_inputs()[0].name: x})[0][0]
        idx = probs.argmax(axis=1)
        keep = (idx != 0) & np.concatenate([[True], idx[1:] != idx[:-1]])  # CTC: drop blanks and repeats
        text = "".join(chars[k] if k < len(chars) else "" for k in idx[keep])
        out.append((text, float(probs.max(axis=1)[keep].mean()) if keep.any() else 0.0))
    return out


def screen_share(rgb: Any) -> float:
    """Share of the most common exact colour over a grid of pixels: a screenshot's flat UI
    background is one colour; a photo's sensor noise and JPEG leave no colour that common."""
    return screen_stats(rgb, marks_from=float("inf"))[0]  # the share alone


def screen_stats(rgb: Any, *, marks_from: float = 0.0) -> tuple[float, int]:
    """``screen_share`` and, when it is at least ``marks_from``, how many small marks stand off
    that colour (0 otherwise: photos never pay for the count).

    Text on a flat background is many small blobs (letters); a flat image without text (a
    blank page, a logo, a drawing of a few shapes) has few or none, and goes on to the
    later stages instead of a full OCR. Measured: generated screenshots 67-1393 marks, the
    flat fixture images 0."""
    import numpy as np

    step = 8 * max(1, max(rgb.shape[:2]) // 1024)  # ~12k pixels of a 1024 px image
    grid = rgb[::step, ::step].reshape(-1, 3).astype(np.int32)
    if not len(grid):
        return 0.0, 0
    keys = (grid[:, 0] << 16) | (grid[:, 1] << 8) | grid[:, 2]
    values, counts = np.unique(keys, return_counts=True)
    share = float(counts.max()) / len(keys)
    if share < marks_from:
        return share, 0
    import cv2

    f = max(1, max(rgb.shape[:2]) // 1024)
    full = rgb[::f, ::f].astype(np.int32)  # about 1024 px: letters stay blobs
    ink = (((full[..., 0] << 16) | (full[..., 1] << 8) | full[..., 2]) != values[counts.argmax()]).astype(np.uint8)
    _n, _labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    area, height = stats[1:, cv2.CC_STAT_AREA], stats[1:, cv2.CC_STAT_HEIGHT]
    # a letter: a few pixels at least (not JPEG specks), at most a tenth of the image high
    return share, int(np.count_nonzero((area >= 4) & (height <= max(1, full.shape[0] // 10))))


def text_likely(image: Any, *, exif: Any = None, config: GateConfig = DEFAULT_CONFIG) -> GateDecision:
    """Whether ``image`` (a PIL image, upright, or an HxWx3 RGB array) likely holds text.

    ``exif``: the file's EXIF (a Pillow ``Image.Exif`` or a tag mapping); read from ``image``
    when None and it is a PIL image. The reason says which stage decided, and on what."""
    if config.exif:
        if exif is None and hasattr(image, "getexif"):
            try:
                exif = image.getexif()
            except Exception:
                exif = None
        tool = exif_hint(exif)
        if tool:
            return GateDecision(True, f"exif: screenshot software ({tool})")
    rgb = rgb_array(image)
    # first: a screenshot's small text may have no sharp edge at the thumbnail's size, nor be
    # found by the detector at its reduced size; its flat colours tell
    if config.screen_share is not None:
        share, n_marks = screen_stats(rgb, marks_from=config.screen_share)
        if share >= config.screen_share and n_marks >= config.screen_marks:
            return GateDecision(True, f"screenshot-like: one colour covers {share:.0%}, {n_marks} marks on it")
    edges = densest = 0.0
    if config.min_edge_share is not None or config.min_block_edges is not None:
        edges, densest = edge_stats(grey_thumb(rgb, THUMB_SIDE))
    if config.min_edge_share is not None and edges < config.min_edge_share:
        return GateDecision(False, f"statistics: {edges:.2%} sharp-edge pixels (< {config.min_edge_share:.1%})")
    if config.min_block_edges is not None and densest < config.min_block_edges:
        return GateDecision(
            False, f"statistics: densest block {densest:.0%} sharp-edge pixels (< {config.min_block_edges:.0%})"
        )
    if config.det_side is None:
        if config.min_edge_share is not None or config.min_block_edges is not None:
            return GateDecision(True, f"statistics: {edges:.2%} sharp-edge pixels, densest block {densest:.0%}")
        return GateDecision(False, "no stage decided")
    boxes = [box for _, box in detect(rgb, config.det_side, config.region_score)]
    where = f"detector at {config.det_side} px"
    if not boxes:
        return GateDecision(False, f"{where}: no text region")
    if config.probe <= 0:
        return GateDecision(True, f"{where}: {len(boxes)} text region(s)")
    for text, score in probe_read(rgb, boxes[: config.probe]):
        if score >= config.probe_score and sum(ch.isalnum() for ch in text) >= config.probe_chars:
            return GateDecision(True, f"{where}, probe read {text[:30]!r} ({score:.2f})")
    return GateDecision(False, f"{where}: {len(boxes)} region(s), none read as text")
