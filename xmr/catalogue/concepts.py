"""The bridge vocabulary's vectors per model (xmr.bridge)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xmr.catalogue.connection import CatalogueBase


class ConceptVectors(CatalogueBase):
    """The ``concepts`` table."""

    def concept_vectors(self, model_id: str) -> dict[str, np.ndarray]:
        rows = self.conn.execute("SELECT concept, vector FROM concepts WHERE model_id = ?", (model_id,))
        return {c: np.frombuffer(v, dtype="<f4").astype(np.float32) for c, v in rows}

    def put_concept_vectors(self, model_id: str, concepts: Sequence[str], vectors: np.ndarray) -> None:
        vecs = np.ascontiguousarray(vectors, dtype="<f4")
        self.conn.executemany(
            "INSERT OR REPLACE INTO concepts (model_id, concept, dim, vector) VALUES (?, ?, ?, ?)",
            ((model_id, c, int(vecs.shape[1]), v.tobytes()) for c, v in zip(concepts, vecs, strict=True)),
        )
