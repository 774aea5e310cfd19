"""What OCR of one file gives the indexer: its text (as a document's), each line's box and
confidence, and how it was read (models, settings, status) for ``xmr info``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from xmr.ocr.engine import Box, Line, OcrOptions

MODES = ("auto", "all", "off")
# a file's OCR status: text read; none found; the gate said no text is likely; reading failed
TEXT, NO_TEXT, GATED, FAILED = "text", "no text", "gated", "failed"
ORIGIN = "ocr"  # the origin of a text passage recognised in pixels (segments.origin, --explain)
LINE_SEP, PAGE_SEP = "\n", " "
Spans = tuple[tuple[int, int, int], ...]  # (page, start, end) in the text


@dataclass(frozen=True)
class OcrConfig:
    """How the decode workers apply OCR (picklable). ``mode``: auto (the gate decides) or all."""

    mode: str = "auto"
    options: OcrOptions = field(default_factory=OcrOptions)

    def settings(self) -> dict[str, Any]:
        return {"mode": self.mode, **self.options.describe()}


def _positive(value: str | None) -> float | None:
    try:
        v = float(value) if value else None
    except ValueError:
        return None
    return v if v is not None and v > 0 else None


def config_for(mode: str | None) -> OcrConfig | None:
    """The decode config of a mode (None: the default, auto); None for ``off``."""
    mode = (mode or "auto").strip().lower()
    if mode == "off":
        return None
    options = OcrOptions(
        det_model=os.environ.get("XMR_OCR_DET_MODEL") or None,
        rec_model=os.environ.get("XMR_OCR_REC_MODEL") or None,
    )
    max_lines = os.environ.get("XMR_OCR_MAX_LINES")
    if max_lines and max_lines.isdigit():  # a tuning knob (and what tests bound a dense texture with)
        options = replace(options, max_lines=int(max_lines))
    limit = _positive(os.environ.get("XMR_OCR_TIME_LIMIT"))
    if limit is not None:  # seconds per image or page: a slow or busy machine needs more
        options = replace(options, time_limit_s=limit)
    return OcrConfig(mode, options)


@dataclass(frozen=True)
class OcrLine:
    """A recognised line placed in the file's recognised text (``char_start``..``char_end``)."""

    score: float
    box: Box  # pixels of the image (or PDF page) as read: ``OcrRecord.settings['size']``
    page: int | None
    char_start: int
    char_end: int
    text: str | None = None  # dropped before the catalogue unless --store-snippets


@dataclass
class OcrRecord:
    """One file's OCR: provenance, the lines, and the text the passages are cut from."""

    status: str
    reason: str | None = None
    models: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    lines: list[OcrLine] = field(default_factory=list)
    elapsed_s: float = 0.0
    text: str | None = None  # the lines joined (pages joined as a PDF's text is)
    pages: tuple[tuple[int, int, int], ...] | None = None  # PDF: (page, start, end) in ``text``

    def without_text(self) -> OcrRecord:
        """The record as the catalogue keeps it by default: boxes and offsets, no text."""
        return replace(self, lines=[replace(ln, text=None) for ln in self.lines], text=None)


def assemble(pages: Sequence[tuple[int | None, Sequence[Line]]]) -> tuple[str, Spans | None, list[OcrLine]]:
    """The recognised text of a file from its pages' lines: lines joined by a newline, pages
    by a space (as xmr.documents.join_pages joins a PDF's pages); page spans for PDFs."""
    parts: list[str] = []
    spans: list[tuple[int, int, int]] = []
    out: list[OcrLine] = []
    pos = 0
    for number, lines in pages:
        if not lines:
            continue
        if parts:
            parts.append(PAGE_SEP)
            pos += len(PAGE_SEP)
        start = pos
        for j, ln in enumerate(lines):
            if j:
                parts.append(LINE_SEP)
                pos += len(LINE_SEP)
            out.append(OcrLine(ln.score, ln.box, number, pos, pos + len(ln.text), ln.text))
            parts.append(ln.text)
            pos += len(ln.text)
        if number is not None:
            spans.append((number, start, pos))
    text = "".join(parts)
    return text, (tuple(spans) if pages and pages[0][0] is not None else None), out
