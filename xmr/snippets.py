"""Text snippets for search results, read from the file when they are shown.

By default the catalogue keeps only each passage's character offsets (and PDF
page), not its text: private notes are not copied into ``catalogue.db``. A
result's snippet is cut from the document's text, extracted again exactly as
the indexer did (:func:`xmr.documents.extract`). A file whose size or
modification time differ from the catalogue's shows ``changed since indexing``
instead of a snippet that might be wrong. ``xmr index --store-snippets`` keeps
the passages' text in the catalogue, which is then used as is. A passage of text
recognised in pixels (OCR) is read again from its stored line boxes (xmr.ocr.snippets).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from xmr.catalogue import Catalogue
from xmr.documents import MAX_DOCUMENT_BYTES, Document, read_any
from xmr.errors import MediaError

SNIPPET_CHARS = 240
CHANGED = "changed since indexing"
GONE = "file no longer readable"


def shorten(text: str) -> str:
    """One line of at most SNIPPET_CHARS characters."""
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"


def read_for_snippets(path: str | os.PathLike[str], size: int, mtime_ns: int) -> Document | str:
    """The document's text, or why it cannot be shown (CHANGED, GONE or the read error)."""
    try:
        st = os.stat(path)
    except OSError:
        return GONE
    if st.st_size != size or st.st_mtime_ns != mtime_ns:
        return CHANGED
    try:
        return read_any(path, max_bytes=MAX_DOCUMENT_BYTES)  # read the way the indexer read it
    except MediaError as exc:
        return exc.reason


def fill_snippets(cat: Catalogue, results: Iterable[Any], *, all_segments: bool = False) -> None:
    """Set ``snippet`` (or ``snippet_note``) on the text hits of search results that lack one."""
    for r in results:
        hits = r.segments if all_segments else [r.best]
        todo = [h for h in hits if h.snippet is None and h.char_start is not None and h.char_end is not None]
        if not todo:
            continue
        row = cat.file_by_path(r.path)
        recognised = [h for h in todo if getattr(h, "origin", None) == "ocr"]
        if recognised:  # text read in the file's pixels: read again from its stored boxes
            _fill_recognised(cat, row, recognised)
            todo = [h for h in todo if h not in recognised]
            if not todo:
                continue
        doc: Document | str = GONE if row is None else read_for_snippets(row.fs_path, row.size, row.mtime_ns)
        for hit in todo:
            if isinstance(doc, str):
                hit.snippet_note = doc
            elif hit.char_end > len(doc.text):
                hit.snippet_note = CHANGED
            else:
                hit.snippet = shorten(doc.text[hit.char_start : hit.char_end])


def _unchanged(row: Any) -> str | None:
    """None when the file is as indexed, else why no snippet can be shown."""
    if row is None:
        return GONE
    try:
        st = os.stat(row.fs_path)
    except OSError:
        return GONE
    return None if (st.st_size, st.st_mtime_ns) == (row.size, row.mtime_ns) else CHANGED


def _fill_recognised(cat: Catalogue, row: Any, hits: list[Any]) -> None:
    """Snippets of OCR passages (xmr.ocr.snippets): the lines they cover, read again."""
    from xmr.ocr.snippets import passage_text

    note = _unchanged(row)
    for hit in hits:
        if note is not None:
            hit.snippet_note = note
            continue
        try:
            text = passage_text(cat, row.hash, row.fs_path, hit.page, (hit.char_start, hit.char_end))
        except Exception as exc:  # an unreadable file, or OCR that cannot load: say why
            hit.snippet_note = " ".join(str(exc).split()) or type(exc).__name__
            continue
        if text:
            hit.snippet = shorten(text)
        else:
            hit.snippet_note = CHANGED
