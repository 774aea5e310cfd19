"""The OCR gate (xmr.ocr.gate) with the real PP-OCRv6 models: text images pass, photos do not.

Its measured recall, false positives and cost are in benchmarks/results/ocr_gate.txt; here a
few generated images of each kind, so a broken stage fails.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from fixtures.ocr import LAYOUTS, PHOTO_KINDS, photo_image, text_sample
from xmr.ocr.gate import DEFAULT_CONFIG, GateDecision, exif_hint, text_likely


def test_exif_screenshot_tag_decides_at_once() -> None:
    exif = Image.Exif()
    exif[0x0131] = "GNOME Screenshot 41.0"
    assert exif_hint(exif) == "GNOME Screenshot 41.0"
    flat = Image.new("RGB", (64, 64), (200, 30, 30))  # no text at all: only the tag says so
    decision = text_likely(flat, exif=exif)
    assert decision.likely and decision.reason.startswith("exif:")
    exif[0x0131] = "Adobe Lightroom 12.0"
    assert exif_hint(exif) is None
    assert exif_hint({"Software": "Snipping Tool"}) == "Snipping Tool"


def test_flat_and_smooth_images_are_rejected_by_statistics() -> None:
    flat = np.asarray(photo_image(2, kind="blurred")).copy()
    for img in (Image.fromarray(flat), photo_image(3, kind="bokeh")):
        decision = text_likely(img)
        assert decision == GateDecision(False, decision.reason) and decision.reason.startswith("statistics:")


def test_a_screenshot_is_likely_by_its_colours() -> None:
    # seed 13: a portrait screenshot whose small text leaves no sharp edge on the thumbnail
    for seed in (3, 13):
        sample = text_sample(seed, layout="screenshot")
        decision = text_likely(sample.image)
        assert decision.likely and decision.reason.startswith("screenshot-like"), (seed, decision)


def test_a_flat_image_without_marks_is_not_a_screenshot() -> None:
    from PIL import ImageDraw

    from xmr.ocr.gate import screen_stats

    blank = Image.new("RGB", (800, 600), (250, 250, 250))  # a blank scan: one colour
    logo = blank.copy()
    draw = ImageDraw.Draw(logo)  # a drawing of three shapes on the flat colour
    draw.ellipse((100, 100, 300, 260), fill=(200, 40, 40))
    draw.rectangle((420, 120, 700, 420), fill=(40, 90, 200))
    draw.polygon([(150, 500), (350, 330), (400, 560)], fill=(20, 160, 60))
    for img in (blank, logo):
        share, marks = screen_stats(img)
        assert share >= DEFAULT_CONFIG.screen_share and marks < DEFAULT_CONFIG.screen_marks, (share, marks)
        decision = text_likely(img)
        assert not decision.likely and not decision.reason.startswith("screenshot-like"), decision
    # the same flat colour with a line of text on it is a screenshot again
    draw.text((40, 40), "Settings  General  Privacy  Network", fill=(0, 0, 0))
    share, marks = screen_stats(logo)
    assert marks >= DEFAULT_CONFIG.screen_marks
    assert text_likely(logo).reason.startswith("screenshot-like")


@pytest.mark.slow
@pytest.mark.parametrize("layout", [x for x in LAYOUTS if x != "screenshot"])
def test_text_images_pass(layout: str) -> None:
    sample = text_sample(7, layout=layout)
    decision = text_likely(sample.image)
    assert decision.likely, (layout, decision)
    # and without the colour and edge stages, the detector and probe read alone still say so
    alone = replace(DEFAULT_CONFIG, screen_share=None, min_edge_share=None)
    assert text_likely(sample.image, config=alone).likely


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["city", "wall", "fence", "foliage", "shapes"])
def test_textured_photos_do_not_pass(kind: str) -> None:
    # the hard cases: sharp, regular edges (windows, bricks, posts) that pass the statistics
    for seed in (1, 2):
        decision = text_likely(photo_image(seed, kind=kind))
        assert not decision.likely, (kind, seed, decision)


def test_photo_kinds_are_not_flat() -> None:
    # the negatives must be real work for a gate: textured, not one colour
    for i, kind in enumerate(PHOTO_KINDS):
        arr = np.asarray(photo_image(i, size=(160, 120), kind=kind).convert("L"), dtype=np.float32)
        assert arr.std() > 4, kind
