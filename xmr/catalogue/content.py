"""Contents (by hash): their encodings, segments and vectors."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from xmr.catalogue.ocr import OcrTables
from xmr.catalogue.rows import SegmentData, now_iso

DECODING_KEY = "decoding."  # settings key prefix: + content hash -> JSON provenance of its decoding


class ContentTables(OcrTables):
    """The ``encodings``, ``segments`` and ``vectors`` of each content."""

    def gc_contents(self, hashes: Iterable[str]) -> int:
        """Drop segments, vectors and encodings of contents no file refers to any more."""
        dropped = 0
        for h in hashes:
            if self.conn.execute("SELECT 1 FROM files WHERE hash = ? LIMIT 1", (h,)).fetchone():
                continue
            self.drop_content(h)
            dropped += 1
        return dropped

    def drop_content(self, h: str, *, space: str | None = None, keep_model: str | None = None) -> None:
        where, params = "hash = ?", [h]
        if space is not None:
            where += " AND space = ?"
            params.append(space)
        if keep_model is not None:
            where += " AND model_id != ?"
            params.append(keep_model)
        self.conn.execute(f"DELETE FROM vectors WHERE segment_id IN (SELECT id FROM segments WHERE {where})", params)
        self.conn.execute(f"DELETE FROM segments WHERE {where}", params)
        self.conn.execute(f"DELETE FROM encodings WHERE {where}", params)
        if space is None and keep_model is None:
            self.conn.execute("DELETE FROM settings WHERE key = ?", (DECODING_KEY + h,))
            self.drop_ocr(h)

    def set_decoding(self, h: str, provenance: dict[str, Any]) -> None:
        """How content ``h`` was decoded (a video's frame sampling), for `xmr info`."""
        self.conn.execute(
            "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (DECODING_KEY + h, json.dumps(provenance))
        )

    def decoding(self, h: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", (DECODING_KEY + h,)).fetchone()
        return json.loads(row[0]) if row else None

    def encoded_spaces(self, h: str, models: dict[str, str]) -> set[str]:
        """Spaces in which content ``h`` is already embedded by the given model per space."""
        rows = self.conn.execute("SELECT space, model_id FROM encodings WHERE hash = ?", (h,))
        return {space for space, model_id in rows if models.get(space) == model_id}

    def encoded_hashes(self, space: str, model_id: str | None) -> EncodedHashes:
        """The contents embedded in ``space`` by ``model_id``, for ``in`` tests."""
        return EncodedHashes(self.conn, space, model_id)

    def add_encoding(
        self,
        h: str,
        space: str,
        model_id: str,
        segments: Sequence[SegmentData],
        vectors: np.ndarray,
        dropped: int = 0,
    ) -> None:
        """Store one content's segments and vectors for a space; call inside a transaction.

        Replaces whatever that content had in the space (older models included),
        so a re-embed or a model switch never leaves two generations behind.
        """
        if len(segments) != len(vectors):
            raise ValueError("one vector per segment")
        self.drop_content(h, space=space)
        vecs = np.ascontiguousarray(vectors, dtype="<f4")
        dim = int(vecs.shape[1]) if vecs.ndim == 2 else 0
        for seq, (seg, vec) in enumerate(zip(segments, vecs, strict=True)):
            cur = self.conn.execute(
                "INSERT INTO segments (hash, space, model_id, kind, seq, start_s, end_s, char_start, char_end,"
                " text, page, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    h,
                    space,
                    model_id,
                    seg.kind,
                    seq,
                    seg.start_s,
                    seg.end_s,
                    seg.char_start,
                    seg.char_end,
                    seg.text,
                    seg.page,
                    seg.origin,
                ),
            )
            self.conn.execute(
                "INSERT INTO vectors (segment_id, space, model_id, dim, vector) VALUES (?, ?, ?, ?, ?)",
                (cur.lastrowid, space, model_id, dim, vec.tobytes()),
            )
        self.conn.execute(
            "INSERT INTO encodings (hash, space, model_id, n_segments, created, n_dropped) VALUES (?, ?, ?, ?, ?, ?)",
            (h, space, model_id, len(segments), now_iso(), dropped),
        )


class EncodedHashes:
    """``h in encoded``: whether content ``h`` is embedded in a space by a model.

    A run over a few new files in a huge index asks about a handful of contents: one indexed
    query each (the whole set of 5M hashes took 4.8 s to read). Past ``SINGLE_MAX`` questions
    (a run over a big folder) the whole set is read once and asked instead."""

    SINGLE_MAX = 2000

    def __init__(self, conn: sqlite3.Connection, space: str, model_id: str | None) -> None:
        self.conn, self.space, self.model_id = conn, space, model_id
        self.asked = 0
        self._all: set[str] | None = None

    def __contains__(self, h: object) -> bool:
        if self._all is None and self.asked < self.SINGLE_MAX:
            self.asked += 1
            row = self.conn.execute(
                "SELECT 1 FROM encodings WHERE hash = ? AND space = ? AND model_id = ?", (h, self.space, self.model_id)
            ).fetchone()
            return row is not None
        if self._all is None:
            rows = self.conn.execute(
                "SELECT hash FROM encodings WHERE space = ? AND model_id = ?", (self.space, self.model_id)
            )
            self._all = {r for (r,) in rows}
        return h in self._all
