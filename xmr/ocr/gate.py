"""Whether an image likely holds text (``--ocr auto``). Provisional: replaced by the measured gate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    likely: bool
    reason: str


def text_likely(image: Any, *, exif: Any = None) -> GateDecision:
    """Provisional: every image is a candidate."""
    return GateDecision(True, "provisional gate: every image")
