"""The ``VectorIndex`` protocol: what search, the indexer, the server and ``xmr status`` use of
a vector index, whatever backend (``xmr.store.factory``) implements it.

A vector index answers nearest-neighbour queries over the vectors of one
(space, model) of the catalogue. The catalogue (reached through
``VectorSource``) is the source of truth; whatever an index persists is a
derived cache that may be missing, stale or damaged, and search must still
answer correctly from the catalogue (exactly, if need be).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from xmr.errors import CatalogueError
from xmr.store.source import VectorSource


class BackendError(CatalogueError):
    """The catalogue names a vector index backend this installation cannot open."""


@runtime_checkable
class VectorIndex(Protocol):
    """Search over the vectors of one (space, model); opens lazily at the first search.

    Implementations take ``(directory, source, space, model_id, dim, *, readonly=False,
    mapped=False, **backend_options)``: a ``readonly`` index never writes (an unusable
    persisted index is answered exactly, see ``fallback``); ``mapped`` hints that the
    process asks one query, so a cheap way in beats a fast steady state.
    """

    space: str
    model_id: str
    dim: int
    source: VectorSource  # reassignable: the server hands each catalogue generation's view
    label: str  # what messages call the persisted index (a file name)

    def search(
        self, queries: np.ndarray, k: int, *, candidate_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k cosine similarities per query: (ids int64 (m, k'), sims float32 (m, k')), best
        first; k' = min(k, live vectors [in candidate_ids]). Syncs with the source first:
        vectors added or deleted since the last call are (not) returned."""
        ...

    def exact_search(
        self, queries: np.ndarray, k: int, *, candidate_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over every live vector of the source; same shapes as ``search``."""
        ...

    def refresh(self) -> None:
        """Forget what is loaded: the next search re-opens (after another process checkpointed)."""
        ...

    def checkpoint(self) -> dict:
        """Persist an index of everything in the source; returns the state row put."""
        ...

    def problem(self) -> str:
        """Why the persisted index needs a checkpoint (behind the catalogue, damaged on a cheap
        look, an unfinished write), "" when it is up to date. Cheap: no whole-file check."""
        ...

    def verify(self) -> str:
        """Full check of what is persisted: "" when sound, else what is wrong (may be slow)."""
        ...

    def discard_if_damaged(self) -> bool:
        """Remove the persisted index if it still fails ``verify``; True when removed."""
        ...

    def fallback(self) -> str:
        """Why this reader answers exactly instead of from its unusable persisted index ("" if not)."""
        ...

    def persisted(self) -> bool:
        """Whether the index has files on disk (that ``discard_if_damaged`` could remove)."""
        ...

    def fingerprint(self) -> str:
        """Changes whenever what is persisted changes: part of cache keys of answers."""
        ...

    def stats(self) -> dict[str, Any]:
        """What is loaded and persisted; opens nothing. Always has ``backend``, ``space``,
        ``model_id``, ``dim``, ``opened`` and ``mode``, and ``live_count`` once opened."""
        ...

    def close(self) -> None:
        """Release what is loaded (memory, mappings)."""
        ...
