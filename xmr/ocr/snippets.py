"""The text of OCR lines when they are shown, read again from the file.

By default the catalogue keeps each recognised line's box, not its text (the passage rule).
A hit's snippet (and ``xmr info``) reads those lines again with the recogniser alone (no
detector) on their boxes: one model call for a few crops, plus loading the image (or
rendering the PDF page). With ``--store-snippets`` the stored text is used instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from xmr.ocr.record import LINE_SEP


def passage_text(cat: Any, h: str, path: str | os.PathLike[str], page: int | None, span: tuple[int, int]) -> str:
    """The recognised lines of content ``h`` that a passage (``span`` in its recognised text,
    on ``page``) covers, read again from ``path``. Raises on an unreadable file."""
    lines = cat.ocr_lines(h, page=page, span=span)
    if not lines:
        return ""
    texts = read_again(path, lines, cat.ocr_settings(h) or {})
    return LINE_SEP.join(t for t in texts if t)


def read_again(
    path: str | os.PathLike[str], lines: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]
) -> list[str]:
    """Each line's text: as stored, else recognised again in its box (page by page)."""
    out = [ln.get("text") for ln in lines]
    todo = [i for i, t in enumerate(out) if t is None]
    if not todo:
        return [t or "" for t in out]
    from xmr.ocr import engine
    from xmr.ocr.engine import OcrOptions

    options = OcrOptions(
        max_side=int(settings.get("max_side", OcrOptions.max_side)),
        det_model=settings.get("det_model"),
        rec_model=settings.get("rec_model"),
    )
    for page in sorted({lines[i].get("page") or 0 for i in todo}):
        these = [i for i in todo if (lines[i].get("page") or 0) == page]
        if page:
            image, scale = _pdf_page(path, page), 1.0
        else:
            from xmr.ocr.read import load_for_ocr

            image = load_for_ocr(path, options.max_side)
            width = (settings.get("size") or [image.width])[0]
            scale = image.width / width if width else 1.0
        boxes = [tuple((x * scale, y * scale) for x, y in lines[i]["box"]) for i in these]
        for i, ln in zip(these, engine.recognise(image, boxes, options=options), strict=True):
            out[i] = ln.text
    return [t or "" for t in out]


def _pdf_page(path: str | os.PathLike[str], page: int) -> Any:
    import pypdfium2 as pdfium

    from xmr.ocr.read import render_page

    pdf = pdfium.PdfDocument(os.fspath(path))
    try:
        return render_page(pdf, page - 1)
    finally:
        pdf.close()
