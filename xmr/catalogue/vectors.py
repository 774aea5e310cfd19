"""The vectors as :class:`xmr.store.source.VectorSource`: counts, batches, ANN state rows."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from xmr.catalogue.connection import CatalogueBase
from xmr.catalogue.rows import _chunks, now_iso


class VectorTables(CatalogueBase):
    """What the ANN caches are built from and checked against."""

    def vector_count(self, space: str, model_id: str) -> int:
        r = self.conn.execute(
            "SELECT n FROM vector_counts WHERE space = ? AND model_id = ?", (space, model_id)
        ).fetchone()
        return int(r[0]) if r else 0

    def generation(self) -> tuple[int, int]:
        """(vectors, highest vector id ever assigned): changes with every insert and every delete,
        since ids are never reused. What derived caches of the vectors are keyed by."""
        n = self.conn.execute("SELECT COALESCE(SUM(n), 0) FROM vector_counts").fetchone()[0]
        return int(n), self.max_vector_id("", "")

    def max_vector_id(self, space: str, model_id: str) -> int:
        """The highest vector id ever assigned (all spaces): never decreases, even when the
        newest vectors are deleted, so the ANN cache can tell new vectors from old ones."""
        r = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'vectors'").fetchone()
        return int(r[0]) if r else 0

    def iter_vectors(
        self, space: str, model_id: str, *, after_id: int = 0, batch: int = 20000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        last = after_id
        while True:
            rows = self.conn.execute(
                "SELECT id, dim, vector FROM vectors WHERE space = ? AND model_id = ? AND id > ? ORDER BY id LIMIT ?",
                (space, model_id, last, batch),
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            dim = rows[0][1]
            vecs = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), dim)
            yield ids, vecs.astype(np.float32, copy=False)
            last = int(ids[-1])

    def live_vector_ids(self, space: str, model_id: str, *, after_id: int = 0) -> np.ndarray:
        rows = self.conn.execute(  # covering vectors_space (space, model_id, id) either way
            "SELECT id FROM vectors WHERE space = ? AND model_id = ? AND id > ? ORDER BY id",
            (space, model_id, after_id),
        ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def vectors_after(self, after_id: int) -> int:
        """Live vectors of every space with an id above ``after_id``. With ``generation()``: a
        generation (n1, m1) holds only additions to (n0, m0) when n1 - n0 == vectors_after(m0)."""
        return int(self.conn.execute("SELECT COUNT(*) FROM vectors WHERE id > ?", (after_id,)).fetchone()[0])

    def get_ann_state(self, space: str, model_id: str) -> dict[str, Any] | None:
        r = self.conn.execute(
            "SELECT state FROM ann_state WHERE space = ? AND model_id = ?", (space, model_id)
        ).fetchone()
        return json.loads(r[0]) if r else None

    def put_ann_state(self, space: str, model_id: str, state: dict[str, Any]) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT OR REPLACE INTO ann_state (space, model_id, state, updated) VALUES (?, ?, ?, ?)",
                (space, model_id, json.dumps(state, sort_keys=True), now_iso()),
            )

    def vectors_by_id(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for chunk in _chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for vid, vec in self.conn.execute(f"SELECT id, vector FROM vectors WHERE id IN ({marks})", chunk):
                out[int(vid)] = np.frombuffer(vec, dtype="<f4").astype(np.float32)
        return out
