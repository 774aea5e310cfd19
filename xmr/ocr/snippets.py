"""The text of an OCR passage when it is shown, read again from the file.

By default the catalogue keeps each recognised line's box, not its text (the passage rule).
A hit's snippet reads those lines again with the recogniser alone (no detector) on the
boxes the passage covers: one model call for a few crops, plus loading the image (or
rendering the PDF page). With ``--store-snippets`` the stored text is used instead.
"""

from __future__ import annotations

import os
from typing import Any

from xmr.ocr.record import LINE_SEP


def passage_text(cat: Any, h: str, path: str | os.PathLike[str], page: int | None, span: tuple[int, int]) -> str:
    """The recognised lines of content ``h`` that a passage (``span`` in its recognised text,
    on ``page``) covers, read again from ``path``. Raises on an unreadable file."""
    lines = cat.ocr_lines(h, page=page, span=span)
    if not lines:
        return ""
    if all(ln["text"] is not None for ln in lines):
        return LINE_SEP.join(ln["text"] for ln in lines)
    from xmr.ocr import engine
    from xmr.ocr.engine import OcrOptions

    settings = cat.ocr_settings(h) or {}
    options = OcrOptions(max_side=int(settings.get("max_side", OcrOptions.max_side)))
    if page is not None:
        image = _pdf_page(path, page)
        scale = 1.0
    else:
        from xmr.ocr.read import load_for_ocr

        image = load_for_ocr(path, options.max_side)
        width = (settings.get("size") or [image.width])[0]
        scale = image.width / width if width else 1.0
    boxes = [tuple((x * scale, y * scale) for x, y in ln["box"]) for ln in lines]
    return LINE_SEP.join(ln.text for ln in engine.recognise(image, boxes, options=options) if ln.text)


def _pdf_page(path: str | os.PathLike[str], page: int) -> Any:
    import pypdfium2 as pdfium

    from xmr.ocr.read import render_page

    pdf = pdfium.PdfDocument(os.fspath(path))
    try:
        return render_page(pdf, page - 1)
    finally:
        pdf.close()
