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
from xmr.ocr.gate import (
    DEFAULT_CONFIG,
    THUMB_SIDE,
    GateDecision,
    edge_stats,
    exif_hint,
    grey_thumb,
    rgb_array,
    text_likely,
)


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
        share, marks = screen_stats(np.asarray(img))
        assert share >= DEFAULT_CONFIG.screen_share and marks < DEFAULT_CONFIG.screen_marks, (share, marks)
        decision = text_likely(img)
        assert not decision.likely and not decision.reason.startswith("screenshot-like"), decision
    # the same flat colour with a line of text on it is a screenshot again
    draw.text((40, 40), "Settings  General  Privacy  Network", fill=(0, 0, 0))
    share, marks = screen_stats(np.asarray(logo))
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


def _horizon(w: int = 800, h: int = 600) -> Image.Image:
    """A photo-like scene without text: smooth sky, a field and a road, split by sharp straight
    borders (enough sharp edges to pass the edge-share stage)."""
    rng = np.random.default_rng(5)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    arr = np.where(yy < 0.45, 120 + 100 * yy, 60 + 30 * yy) * np.ones((1, w, 3), np.float32)
    arr[int(h * 0.7) :] += 110  # the road's border
    arr += rng.normal(0, 2, arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def test_a_scene_of_lines_is_rejected_by_the_block_stage() -> None:
    img = _horizon()
    share, densest = edge_stats(grey_thumb(rgb_array(img), THUMB_SIDE))
    assert share >= DEFAULT_CONFIG.min_edge_share  # the edge-share stage alone lets it through ...
    assert DEFAULT_CONFIG.min_block_edges is not None and densest < DEFAULT_CONFIG.min_block_edges
    decision = text_likely(img)  # ... the block stage stops it before the detector
    assert not decision.likely and decision.reason.startswith("statistics: densest block"), decision
    without = text_likely(img, config=replace(DEFAULT_CONFIG, min_block_edges=None, det_side=None))
    assert without.likely  # the statistics said "maybe" without it: the block stage is what decided


@pytest.mark.parametrize("degraded", [False, True])
@pytest.mark.parametrize("layout", ["paper", "sign", "slide", "caption"])
def test_text_images_pass_the_statistics(layout: str, degraded: bool) -> None:
    # the statistics alone (no detector) say "maybe" for text: letters make dense blocks of edges
    stats_only = replace(DEFAULT_CONFIG, screen_share=None, det_side=None)
    sample = text_sample(7, layout=layout, degraded=degraded)
    decision = text_likely(sample.image, config=stats_only)
    assert decision.likely, (layout, degraded, decision)


def test_stages_accept_arrays_and_small_images() -> None:
    rng = np.random.default_rng(0)
    small = (128 + rng.normal(0, 3, (10, 12, 3))).astype(np.uint8)  # smaller than a block, no colour common
    assert edge_stats(grey_thumb(rgb_array(small), THUMB_SIDE)) == (0.0, 0.0)
    decision = text_likely(small)
    assert not decision.likely and decision.reason.startswith("statistics:"), decision
    grey = Image.new("L", (40, 30), 90)
    assert rgb_array(grey).shape == (30, 40, 3)
