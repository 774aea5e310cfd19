"""What a vector index needs from the catalogue: the ``VectorSource`` protocol.

The catalogue (SQLite) keeps every vector and is the source of truth; a vector
index is a derived cache of it, reached only through this protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np

from xmr.errors import CatalogueError


@runtime_checkable
class VectorSource(Protocol):
    """What the vector store needs from the catalogue, per (space, model_id).

    Guarantees the catalogue must give:

    * ids are positive and assigned from a monotonically increasing counter
      that never reuses an id (SQLite ``AUTOINCREMENT``); a committed vector
      is never modified in place (re-embedding deletes and inserts anew);
    * a transaction commits ids above every previously committed id (true for
      SQLite's single writer), so ``ids > max_vector_id`` is "new since";
    * vectors are float32, L2-normalised, shape (n, dim).
    """

    def vector_count(self, space: str, model_id: str) -> int:
        """Number of live vectors. Called on every search, so keep it indexed."""
        ...

    def max_vector_id(self, space: str, model_id: str) -> int:
        """Highest id ever assigned to this (space, model), 0 if none; never decreases.

        Returning the highest *live* id also works, but deleting the newest
        vectors then looks like a catalogue reset and forces a rebuild.
        """
        ...

    def iter_vectors(
        self, space: str, model_id: str, *, after_id: int = 0, batch: int = 20000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Live vectors with id > after_id in ascending id order, as non-empty
        batches of at most ``batch`` rows: (ids int64 (n,), vectors float32 (n, dim))."""
        ...

    def live_vector_ids(self, space: str, model_id: str) -> np.ndarray:
        """Every live id, int64, sorted ascending."""
        ...

    def get_ann_state(self, space: str, model_id: str) -> dict | None:
        """The state row last put for this (space, model), or None."""
        ...

    def put_ann_state(self, space: str, model_id: str, state: dict) -> None:
        """Store (replace) the state row; ``state`` is JSON-serialisable."""
        ...


def check_batch(vecs: np.ndarray, space: str, model_id: str, dim: int) -> None:
    """Raise CatalogueError unless ``vecs`` is a (n, dim) batch."""
    if vecs.ndim != 2 or vecs.shape[1] != dim:
        raise CatalogueError(f"catalogue holds {vecs.shape[-1]}-d vectors for {space} model {model_id}, expected {dim}")


def fetch_vectors(
    source: VectorSource,
    space: str,
    model_id: str,
    dim: int,
    *,
    after_id: int,
    batch: int = 20_000,
    until: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Live vectors with after_id < id (<= until), concatenated: (ids int64, vectors float32)."""
    ids_parts, vec_parts = [], []
    with contextlib.closing(source.iter_vectors(space, model_id, after_id=after_id, batch=batch)) as it:
        for ids, vecs in it:
            check_batch(vecs, space, model_id, dim)
            ids = np.asarray(ids, np.int64)
            if until is not None and len(ids) and ids[-1] > until:
                keep = ids <= until
                ids_parts.append(ids[keep])
                vec_parts.append(np.asarray(vecs, np.float32)[keep])
                break
            ids_parts.append(ids)
            vec_parts.append(np.asarray(vecs, np.float32))
    if not ids_parts:
        return np.empty(0, np.int64), np.empty((0, dim), np.float32)
    return np.concatenate(ids_parts), np.concatenate(vec_parts)
