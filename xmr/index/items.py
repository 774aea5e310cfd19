"""Work items: what the plan hands to decoding, and what decoding hands back."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xmr.documents import Policy

# characters of a full 77-token passage, and the least share of a batch a text counts for
PASSAGE_CHARS = 300
MIN_TEXT_SHARE = 0.125


@dataclass
class _Item:
    """A file the plan wants looked at: new, changed, pending, or lacking a space's vectors."""

    path: str
    root: str
    size: int
    mtime_ns: int
    row_id: int | None
    old_hash: str | None
    known_hash: str | None  # set when the file is unchanged on disk but still pending
    known_modality: str | None
    ocr_pending: bool = False  # indexed, but not yet read by OCR (indexed before it, or gated): decode again


@dataclass
class _Prepared:
    """A work item once decoded: its content's identity and what the encoders take."""

    item: _Item
    hash: str | None = None
    modality: str = "other"
    error: str | None = None  # one-line reason: the file is recorded as failed
    skip: str | None = None  # why a file xmr could read is not indexed (not a document, a missing tool)
    bytes_read: int = 0
    opened: bool = False  # the file's content was read (hashing or decoding)
    spaces_done: set[str] = field(default_factory=set)  # already embedded (moved / duplicate)
    pixels: np.ndarray | None = None
    frames: list[tuple[float, float, np.ndarray]] | None = None  # timed images (video frames)
    dropped: int = 0  # inputs the decoder left out (near-duplicate video frames)
    provenance: dict[str, Any] | None = None  # how the decoder read it (video sampling): `xmr info`
    audio_windows: list[tuple[float, float, np.ndarray]] | None = None
    text: str | None = None
    pages: tuple[tuple[int, int, int], ...] | None = None  # PDF pages: (number, start, end) in ``text``
    junk_guard: bool = True  # drop passages that are mostly non-words (not for --text-ext extensions)
    undecoded: bool = False  # an image met before CLIP's preprocessor was loaded: prepared again (_complete)
    head: bytes | None = None  # the file's first bytes, read while hashing (decode reuses them)
    meta: dict[str, Any] | None = None  # descriptive metadata (xmr.media.meta), read while identifying
    text_origin: str | None = None  # "ocr": ``text`` was recognised in the file's pixels
    ocr: Any = None  # xmr.ocr.record.OcrRecord: written with the file (provenance, line boxes)
    # spaces the file yields input for beyond its kind's own (an image's recognised text: clap)
    extra_spaces: tuple[str, ...] = ()


@dataclass
class DecodeConfig:
    """What decoding needs besides the item: picklable, sent along with every work item.
    Nothing here refers to the catalogue: decoding never opens it."""

    image_preprocessor: Any  # None until CLIP's encoder is loaded
    audio_window_s: float
    audio_hop_s: float
    max_text_bytes: int
    policy: Policy = field(default_factory=Policy)
    video: Any = None  # xmr.preprocess.video.Sampling; None: the defaults
    ocr: Any = None  # xmr.ocr.record.OcrConfig; None: no OCR


def wanted_spaces(p: _Prepared, spaces_for: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The spaces a decoded file is embedded in: its kind's (for the run's modalities), and those
    its decoder found optional input for (an image's recognised text)."""
    base = tuple(spaces_for.get(p.modality, ()))
    if not base:
        return ()
    return base + tuple(s for s in p.extra_spaces if s not in base)


def _segment_estimate(p: _Prepared) -> float:
    """A file's share of a commit batch, in full segments (an image, an audio window, a
    77-token passage). A text counts by its length, so a batch of one-line notes holds a few
    hundred of them: the text encoders sort a call's texts by length and batch them, and
    short calls pad more and run smaller matrices (ms per one-line note, CLIP + CLAP text,
    by call size: 16 -> 28.4, 64 -> 23.2, 256 -> 20.6, 1024 -> 18.3)."""
    if p.frames is not None:
        return len(p.frames) + len(p.audio_windows or ())
    if p.audio_windows is not None:
        return len(p.audio_windows)
    text = max(MIN_TEXT_SHARE, len(p.text) / PASSAGE_CHARS) if p.text is not None else 0
    return text + (1 if p.pixels is not None else 0)  # an image with recognised text: both


# The driver's verdict on an identified file: sets ``spaces_done`` (spaces its content is
# already embedded in) and says whether it must be decoded (some wanted space lacks it).
Triage = Callable[[_Prepared], bool]

# the public names of the work item types, for Embedder implementations
WorkItem = _Item
Decoded = _Prepared
