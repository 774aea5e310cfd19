"""What a search looks up: vector ids per group, segments and files of hits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from xmr.catalogue.connection import CatalogueBase
from xmr.catalogue.rows import SegmentRef, _chunks, _under_any


class SearchLookups(CatalogueBase):
    """Reads for xmr.search."""

    def group_vector_ids(
        self, space: str, model_id: str, kind: str, *, under: Sequence[str] = (), after_id: int = 0
    ) -> np.ndarray:
        """Vector ids of one segment kind in a space, optionally only for files under some folders
        or above ``after_id``."""
        sql = (
            "SELECT v.id FROM vectors v JOIN segments s ON s.id = v.segment_id"
            " WHERE v.space = ? AND v.model_id = ? AND s.kind = ?"
        )
        params: list[Any] = [space, model_id, kind]
        if after_id:  # only then: "v.id > ?" turns SQLite from the covering vectors_group index to reading rows
            sql += " AND v.id > ?"
            params.append(after_id)
        if under:
            clause, p = _under_any("f.path", under)
            sql += f" AND s.hash IN (SELECT f.hash FROM files f WHERE {clause})"
            params.extend(p)
        # sorted here, not by ORDER BY, which would make SQLite walk vectors_space and read each row
        rows = self.conn.execute(sql, params).fetchall()
        return np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))

    def vector_ids_of(self, space: str, model_id: str, kind: str, hashes: Iterable[str]) -> np.ndarray:
        """Vector ids of one group that belong to these contents (a filter's or keyword match's
        candidates), sorted."""
        out: list[int] = []
        for chunk in _chunks(sorted(set(hashes)), 500):
            marks = ",".join("?" * len(chunk))
            out.extend(
                r[0]
                for r in self.conn.execute(
                    "SELECT v.id FROM segments s JOIN vectors v ON v.segment_id = s.id"
                    f" WHERE s.hash IN ({marks}) AND s.space = ? AND s.model_id = ? AND s.kind = ?",
                    [*chunk, space, model_id, kind],
                )
            )
        return np.sort(np.asarray(out, dtype=np.int64))

    def segments_for_vectors(self, ids: Sequence[int]) -> dict[int, SegmentRef]:
        out: dict[int, SegmentRef] = {}
        # a catalogue before schema 7 (read, never migrated, by a search) has no origin column
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        origin = "s.origin" if version >= 7 else "NULL"
        for chunk in _chunks([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                "SELECT v.id, s.id, s.hash, s.space, s.model_id, s.kind, s.seq, s.start_s, s.end_s, s.char_start,"
                f" s.char_end, s.text, s.page, {origin} FROM vectors v JOIN segments s ON s.id = v.segment_id"
                f" WHERE v.id IN ({marks})",
                chunk,
            ):
                out[int(row[0])] = SegmentRef(*row)
        return out

    def files_for_hashes(
        self, hashes: Iterable[str], *, under: Sequence[str] = ()
    ) -> dict[str, list[tuple[str, str, bytes | None]]]:
        """hash -> [(path, modality, raw path bytes or None)] of indexed files holding that content."""
        out: dict[str, list[tuple[str, str, bytes | None]]] = {}
        for chunk in _chunks(list(set(hashes)), 500):
            marks = ",".join("?" * len(chunk))
            # "+status": without it SQLite walks files_status, every indexed row (28 ms at 100k files
            # per search), instead of looking the few hashes up in files_hash
            sql = f"SELECT hash, path, modality, path_bytes FROM files WHERE +status = 'indexed' AND hash IN ({marks})"
            params: list[Any] = list(chunk)
            if under:
                clause, p = _under_any("path", under)
                sql += f" AND {clause}"
                params.extend(p)
            for h, path, modality, raw in self.conn.execute(sql + " ORDER BY path", params):
                out.setdefault(h, []).append((path, modality, raw))
        return out

    def segment_kinds(self, space: str, model_id: str, *, after_id: int = 0) -> dict[str, int]:
        after = " AND v.id > ?" if after_id else ""  # as in group_vector_ids
        rows = self.conn.execute(
            "SELECT s.kind, COUNT(*) FROM segments s JOIN vectors v ON v.segment_id = s.id"
            f" WHERE v.space = ? AND v.model_id = ?{after} GROUP BY s.kind",
            (space, model_id, *((after_id,) if after_id else ())),
        )
        return {k: n for k, n in rows}
