"""The reliability diagram of ``xmr eval --plot``, drawn with Pillow (no plotting library).

x: confidence, Phi(calibrated score), in equal-width bins; y: the share of the
bin's results that are relevant. Bars on the diagonal mean the score's 0..1
form can be read as a probability of relevance; the gap is what ECE sums.
Under the axis, each bin's share of the results.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from xmr.errors import PathNotFound, UsageError

WIDTH, HEIGHT = 640, 560
LEFT, RIGHT, TOP, BOTTOM = 70, 30, 50, 130  # margins: the plot square lies inside them
BAR = (66, 133, 244)
GAP = (234, 67, 53)
AXIS = (40, 40, 40)
GRID = (225, 225, 225)


def reliability_diagram(calibration: dict[str, Any], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Write the diagram of one ``calibration`` section (see run._calibration) as a PNG."""
    out = Path(path).expanduser()
    if not out.parent.is_dir():
        raise PathNotFound("folder for the plot does not exist", path=out.parent)
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    x0, y0, x1, y1 = LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM

    def px(x: float, y: float) -> tuple[float, float]:
        return x0 + x * (x1 - x0), y1 - y * (y1 - y0)

    for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        d.line([px(0, t), px(1, t)], fill=GRID)
        d.line([px(t, 0), px(t, 1)], fill=GRID)
        d.text((px(t, 0)[0] - 8, y1 + 6), f"{t:.1f}", fill=AXIS, font=font)
        d.text((x0 - 30, px(0, t)[1] - 6), f"{t:.1f}", fill=AXIS, font=font)
    bins = calibration.get("bins", [])
    total = max(sum(b["count"] for b in bins), 1)
    for b in bins:
        if not b["count"]:
            continue
        lo, hi, obs, conf = b["lo"], b["hi"], b["observed"], b["confidence"]
        # the bar: observed relevance; the red band: its gap to the bin's mean confidence
        d.rectangle([px(lo, obs), px(hi, 0)], fill=BAR, outline="white")
        top, bottom = max(obs, conf), min(obs, conf)
        if top - bottom > 1e-9:
            d.rectangle([px(lo, top), px(hi, bottom)], outline=GAP, width=2)
        share = b["count"] / total
        d.rectangle([px(lo, 0)[0] + 1, y1 + 30, px(hi, 0)[0] - 1, y1 + 30 + 50 * share], fill=(150, 150, 150))
    d.line([px(0, 0), px(1, 1)], fill=AXIS, width=1)
    d.rectangle([x0, y0, x1, y1], outline=AXIS)
    d.text((x0, y1 + 20), "confidence = Phi(score); grey: share of results per bin", fill=AXIS, font=font)
    d.text((x0 - 60, y0 - 18), "relevant share", fill=AXIS, font=font)
    thr = calibration.get("threshold") or {}
    head = f"{title}  ECE {calibration.get('ece', 0):.3f}  ({calibration.get('pairs', 0)} results)"
    if thr.get("min_score") is not None:
        head += f"  precision {thr['target_precision']:.2f} at score >= {thr['min_score']:.2f}"
    d.text((x0, 16), head.strip(), fill=AXIS, font=font)
    d.text((x0, HEIGHT - 28), "blue: observed relevance; red: gap to mean confidence", fill=AXIS, font=font)
    try:
        img.save(out, format="PNG")
    except OSError as exc:
        raise UsageError(f"cannot write the plot: {exc.strerror or exc}", path=out) from None
    return out
