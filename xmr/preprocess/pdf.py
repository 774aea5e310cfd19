"""The text layer of a PDF, page by page, with pypdfium2 (PDFium, the engine in Chrome).

Chosen over pypdf and pdfminer.six: wheels carry the PDFium binary (nothing to
compile, no system library), it is maintained and fast (C++; pypdf and
pdfminer.six are pure Python and several times slower on large files), and it
handles the broken and unusual PDFs that browsers meet. OCR is out of scope: a
scanned PDF has no text layer and yields empty pages.
"""

from __future__ import annotations

import os

from xmr.errors import MediaError
from xmr.preprocess import read_error


def read_pdf_pages(path: str | os.PathLike[str], *, max_chars: int | None = None) -> list[tuple[int, str]]:
    """[(page number from 1, text)] of every page; stops once ``max_chars`` characters are read."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(os.fspath(path))
    except FileNotFoundError as exc:
        raise read_error(exc, path) from None
    except pdfium.PdfiumError as exc:
        reason = " ".join(str(exc).split()) or "unreadable PDF"
        if "password" in reason.lower():
            reason = "password-protected PDF"
        raise MediaError(f"cannot read PDF: {reason}", path=path) from None
    pages: list[tuple[int, str]] = []
    total = 0
    try:
        for i in range(len(pdf)):
            page = pdf[i]
            try:
                textpage = page.get_textpage()
                try:
                    text = textpage.get_text_range()
                finally:
                    textpage.close()
            except pdfium.PdfiumError as exc:
                raise MediaError(f"cannot read PDF page {i + 1}: {exc}", path=path) from None
            finally:
                page.close()
            pages.append((i + 1, text))
            total += len(text)
            if max_chars is not None and total >= max_chars:
                break
    finally:
        pdf.close()
    return pages
