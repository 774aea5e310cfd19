"""OCR of one file, as the decode workers run it: an image (behind the gate in ``auto`` mode)
or the pages of a PDF without a text layer, one page at a time. Never raises: a failure is
the record's status and reason, so the image is still indexed by its pixels.

The same loading is used to read stored boxes again for a snippet (xmr.ocr.snippets), so a
box means the same pixels at index and at display time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from xmr.ocr.record import FAILED, GATED, NO_TEXT, TEXT, OcrConfig, OcrRecord, assemble

# a PDF page is rendered so that its longer side has this many pixels (at most 300 dpi):
# enough for body text of an A4 page (about 8 px a point at 2048 px over 842 pt)
PDF_PAGE_PIXELS = 2048
PDF_MAX_SCALE = 300 / 72
PageProgress = Callable[[int, int], None]  # (pages done, pages) of a scanned PDF


def load_for_ocr(path: str | os.PathLike[str], max_side: int) -> Any:
    """The image upright (EXIF orientation applied), RGB; a large JPEG decoded at a reduced scale."""
    from xmr.preprocess.image import load_image

    return load_image(path, target_size=(max_side, max_side))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_for_gate(path: str | os.PathLike[str]) -> Any:
    """The image upright, RGB, for the gate: a large JPEG decoded at a reduced scale, at least
    the probe's size (draft decoding keeps twice the target)."""
    from xmr.ocr.gate import PROBE_SIDE
    from xmr.preprocess.image import load_image

    return load_image(path, target_size=(PROBE_SIDE // 2, PROBE_SIDE // 2))


def read_image(path: str | os.PathLike[str], config: OcrConfig, *, decoded: Any = None) -> OcrRecord:
    """OCR of an image file: gated in ``auto`` mode.

    ``decoded``: the file already decoded, upright (the CLIP preprocessor's image, at least
    twice its input size): the gate reads it, with its EXIF, instead of decoding the file again.
    The recogniser always reads the file decoded at ``config.options.max_side``."""
    from xmr.ocr import engine

    t0 = time.monotonic()
    settings = config.settings()
    try:
        if config.mode == "auto":
            from xmr.ocr.gate import text_likely

            gate_img = decoded if decoded is not None else load_for_gate(path)
            decision = text_likely(gate_img)  # EXIF from the image: load_image keeps it
            settings["gate"] = decision.reason
            if not decision.likely:
                settings["gate_size"] = [gate_img.width, gate_img.height]
                return OcrRecord(GATED, decision.reason, settings=settings, elapsed_s=time.monotonic() - t0)
        img = load_for_ocr(path, config.options.max_side)
        settings["size"] = [img.width, img.height]
        result = engine.read(img, options=config.options)
    except Exception as exc:  # OCR is a bonus: the image is indexed by its pixels anyway
        return OcrRecord(FAILED, _one_line(exc), settings=settings, elapsed_s=time.monotonic() - t0)
    text, _, lines = assemble([(None, result.lines)])
    return OcrRecord(
        TEXT if lines else NO_TEXT,
        result.note,
        result.models,
        settings,
        lines,
        time.monotonic() - t0,
        text or None,
    )


def page_scale(width_pt: float, height_pt: float) -> float:
    return min(PDF_PAGE_PIXELS / max(width_pt, height_pt, 1.0), PDF_MAX_SCALE)


def render_page(pdf: Any, index: int) -> Any:
    """Page ``index`` (from 0) of an open pypdfium2 document as a PIL image."""
    page = pdf[index]
    try:
        w, h = page.get_size()
        bitmap = page.render(scale=page_scale(w, h))
        try:
            return bitmap.to_pil().convert("RGB")
        finally:
            bitmap.close()
    finally:
        page.close()


def read_pdf(
    path: str | os.PathLike[str],
    config: OcrConfig,
    *,
    max_chars: int | None = None,
    on_page: PageProgress | None = None,
) -> OcrRecord:
    """OCR of a PDF without a text layer, page by page (one page in memory at a time).

    ``config.options.time_limit_s`` applies per page; reading stops once ``max_chars``
    characters are recognised (as the text layer's reading does)."""
    import pypdfium2 as pdfium

    from xmr.ocr import engine

    t0 = time.monotonic()
    settings = {**config.settings(), "pdf_page_pixels": PDF_PAGE_PIXELS}
    pages: list[tuple[int | None, list[engine.Line]]] = []
    models: dict[str, str] = {}
    notes: list[str] = []
    try:
        pdf = pdfium.PdfDocument(os.fspath(path))
    except Exception as exc:
        return OcrRecord(FAILED, f"cannot read PDF: {_one_line(exc)}", settings=settings)
    try:
        n = len(pdf)
        total = 0
        for i in range(n):
            try:
                result = engine.read(render_page(pdf, i), options=config.options)
            except Exception as exc:
                notes.append(f"page {i + 1}: {_one_line(exc)}")
                continue
            finally:
                if on_page is not None:
                    on_page(i + 1, n)
            models = result.models
            if result.note:
                notes.append(f"page {i + 1}: {result.note}")
            pages.append((i + 1, result.lines))
            total += sum(len(ln.text) + 1 for ln in result.lines)
            if max_chars is not None and total >= max_chars:
                notes.append(f"stopped after page {i + 1} of {n}: {max_chars:,} characters read")
                break
        settings["pages"] = n
    finally:
        pdf.close()
    text, spans, lines = assemble(pages)
    status = TEXT if lines else (FAILED if notes and not models else NO_TEXT)
    reason = "; ".join(notes[:5]) + (f" (+{len(notes) - 5} more)" if len(notes) > 5 else "") if notes else None
    return OcrRecord(status, reason, models, settings, lines, time.monotonic() - t0, text or None, spans)
