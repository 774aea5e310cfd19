"""Text recognised in pixels (xmr.ocr), per content: how it was read and each line's box.

The lines' text is kept only with ``--store-snippets`` (the passage rule); otherwise a line is
its box, confidence and span in the recognised text, and is read again when shown.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from xmr.catalogue.connection import CatalogueBase
from xmr.catalogue.rows import _chunks, now_iso


class OcrTables(CatalogueBase):
    """The ``ocr`` and ``ocr_lines`` tables (schema 7)."""

    def _has_ocr(self) -> bool:
        """Whether this catalogue has the OCR schema (a search may read an older one)."""
        known = getattr(self, "_ocr_schema", None)
        if known is None:
            known = self.conn.execute("PRAGMA user_version").fetchone()[0] >= 7
            self._ocr_schema = known
        return known

    def set_ocr(self, h: str, record: Any) -> None:
        """Record content ``h``'s OCR (an xmr.ocr.record.OcrRecord); call inside a transaction."""
        self.drop_ocr(h)
        self.conn.execute(
            "INSERT INTO ocr (hash, status, reason, models, settings, n_lines, elapsed_s, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                h,
                record.status,
                record.reason,
                json.dumps(record.models, sort_keys=True),
                json.dumps(record.settings, sort_keys=True),
                len(record.lines),
                round(record.elapsed_s, 3),
                now_iso(),
            ),
        )
        self.conn.executemany(
            "INSERT INTO ocr_lines (hash, seq, page, char_start, char_end, score, box, text)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (h, seq, ln.page, ln.char_start, ln.char_end, ln.score, json.dumps(ln.box), ln.text)
                for seq, ln in enumerate(record.lines)
            ],
        )

    def drop_ocr(self, h: str) -> None:
        if self._has_ocr():
            self.conn.execute("DELETE FROM ocr_lines WHERE hash = ?", (h,))
            self.conn.execute("DELETE FROM ocr WHERE hash = ?", (h,))

    def ocr_info(self, h: str | None) -> dict[str, Any] | None:
        """Content ``h``'s OCR record with its lines (text None unless stored), or None."""
        if not h or not self._has_ocr():
            return None
        row = self.conn.execute(
            "SELECT status, reason, models, settings, n_lines, elapsed_s, created FROM ocr WHERE hash = ?", (h,)
        ).fetchone()
        if row is None:
            return None
        status, reason, models, settings, n, elapsed, created = row
        return {
            "status": status,
            "reason": reason,
            "models": json.loads(models or "{}"),
            "settings": json.loads(settings or "{}"),
            "n_lines": n,
            "elapsed_s": elapsed,
            "read_at": created,
            "lines": self.ocr_lines(h),
        }

    def ocr_lines(
        self, h: str, *, page: int | None = None, span: tuple[int, int] | None = None
    ) -> list[dict[str, Any]]:
        """Content ``h``'s lines in reading order; only those of ``page`` that overlap ``span``
        (a passage's char_start, char_end) when given."""
        if not self._has_ocr():
            return []
        sql = "SELECT seq, page, char_start, char_end, score, box, text FROM ocr_lines WHERE hash = ?"
        params: list[Any] = [h]
        if page is not None:
            sql += " AND page = ?"
            params.append(page)
        if span is not None:
            sql += " AND char_end > ? AND char_start < ?"
            params.extend(span)
        return [
            {
                "seq": seq,
                "page": pg,
                "char_start": c0,
                "char_end": c1,
                "score": score,
                "box": [tuple(p) for p in json.loads(box)],
                "text": text,
            }
            for seq, pg, c0, c1, score, box, text in self.conn.execute(sql + " ORDER BY seq", params)
        ]

    def ocr_settings(self, h: str) -> dict[str, Any] | None:
        if not self._has_ocr():
            return None
        row = self.conn.execute("SELECT settings FROM ocr WHERE hash = ?", (h,)).fetchone()
        return json.loads(row[0] or "{}") if row else None

    def ocr_read(self, hashes: Iterable[str]) -> set[str]:
        """The contents among ``hashes`` that OCR has looked at (whatever it found)."""
        if not self._has_ocr():
            return set()
        out: set[str] = set()
        for chunk in _chunks(sorted(set(hashes)), 500):
            marks = ",".join("?" * len(chunk))
            out.update(h for (h,) in self.conn.execute(f"SELECT hash FROM ocr WHERE hash IN ({marks})", chunk))
        return out

    def ocr_statuses(self) -> dict[str, str]:
        """content hash -> the status of its OCR, for every content OCR has looked at."""
        if not self._has_ocr():
            return {}
        return dict(self.conn.execute("SELECT hash, status FROM ocr").fetchall())

    def skipped_ids(self, reason: str) -> set[int]:
        """Ids of the files skipped for exactly this reason (a PDF's "no text layer", read once OCR is on)."""
        rows = self.conn.execute("SELECT id FROM files WHERE status = 'skipped' AND error = ?", (reason,))
        return {i for (i,) in rows}
