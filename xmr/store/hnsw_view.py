"""What an hnswlib store holds in memory, kept in step with the catalogue.

Either every live vector (``exact`` mode: a small space, or a reader whose file
was unusable), or a verified graph plus the *tail* of vectors committed after
its checkpoint (``ann`` mode). Vectors deleted from the catalogue since are
marked deleted in the graph (and dropped from the tail), so they are never
returned; new ones are appended to the tail and searched exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xmr.store.hnsw_search import ann_search
from xmr.store.mapped import MappedIndex
from xmr.store.source import VectorSource, fetch_vectors
from xmr.store.topk import exact_block, keep_candidates, merge


class LoadedView:
    """The loaded vectors of one (space, model); the source is passed in, as the server swaps it."""

    def __init__(self, space: str, model_id: str, dim: int) -> None:
        self.space, self.model_id, self.dim = space, model_id, int(dim)
        self.mode: str | None = None
        self.index: Any = None
        self.state: dict | None = None
        self.ids = np.empty(0, np.int64)  # exact mode: all live vectors
        self.vecs = np.empty((0, dim), np.float32)
        self.index_ids = np.empty(0, np.int64)  # ann mode: labels in the file (sorted)
        self.index_live = np.empty(0, np.int64)  # ...of which live
        self.tail_ids = np.empty(0, np.int64)  # ann mode: ids > state max, searched exactly
        self.tail_vecs = np.empty((0, dim), np.float32)
        self.loaded_max = 0  # every live id <= this is loaded (index or tail)
        self.seen = (-1, -1)  # (count, max id) of the source at the last sync

    def _fetch(self, source: VectorSource, after_id: int) -> tuple[np.ndarray, np.ndarray]:
        return fetch_vectors(source, self.space, self.model_id, self.dim, after_id=after_id)

    def load_exact(self, source: VectorSource) -> None:
        count = source.vector_count(self.space, self.model_id)
        mx = source.max_vector_id(self.space, self.model_id)
        ids, vecs = self._fetch(source, 0)
        self.mode = "exact"
        self.ids, self.vecs = ids, vecs
        self.loaded_max = max(mx, int(ids[-1]) if len(ids) else 0)
        self.seen = (count, mx)

    def install(self, source: VectorSource, index: Any, state: dict) -> None:
        """Take a verified index: derive deletions and the exact tail from the source."""
        count = source.vector_count(self.space, self.model_id)
        mx = source.max_vector_id(self.space, self.model_id)
        labels = np.sort(np.asarray(index.get_ids_list(), dtype=np.int64))
        state_max = int(state["max_vector_id"])
        live = source.live_vector_ids(self.space, self.model_id)
        gone = np.setdiff1d(labels, live, assume_unique=True)
        for label in gone.tolist():
            index.mark_deleted(label)
        tail_ids, tail_vecs = self._fetch(source, state_max)
        self.mode = "ann"
        self.index, self.state = index, state
        self.index_ids = labels
        self.index_live = np.setdiff1d(labels, gone, assume_unique=True)
        self.tail_ids, self.tail_vecs = tail_ids, tail_vecs
        self.loaded_max = max(mx, state_max, int(tail_ids[-1]) if len(tail_ids) else 0)
        self.seen = (count, mx)

    def sync(self, source: VectorSource) -> bool:
        """Bring the view up to date with commits and deletions since it was taken; False when
        the catalogue went backwards (replaced): then nothing loaded can be trusted."""
        count = source.vector_count(self.space, self.model_id)
        mx = source.max_vector_id(self.space, self.model_id)
        if (count, mx) == self.seen:
            return True
        if mx < self.seen[1]:
            return False
        new_ids, new_vecs = self._fetch(source, self.loaded_max)
        if self.mode == "exact":
            self.ids = np.concatenate([self.ids, new_ids])
            self.vecs = np.concatenate([self.vecs, new_vecs])
            held = len(self.ids)
        else:
            self.tail_ids = np.concatenate([self.tail_ids, new_ids])
            self.tail_vecs = np.concatenate([self.tail_vecs, new_vecs])
            held = len(self.index_live) + len(self.tail_ids)
        self.loaded_max = max(mx, self.loaded_max, int(new_ids[-1]) if len(new_ids) else 0)
        if held != count:  # something was deleted: re-derive from the live ids
            live = source.live_vector_ids(self.space, self.model_id)
            if self.mode == "exact":
                keep = np.isin(self.ids, live, assume_unique=True)
                self.ids, self.vecs = self.ids[keep], self.vecs[keep]
            else:
                gone = np.setdiff1d(self.index_live, live, assume_unique=True)
                for label in gone.tolist():
                    self.index.mark_deleted(label)
                self.index_live = np.setdiff1d(self.index_live, gone, assume_unique=True)
                keep = np.isin(self.tail_ids, live, assume_unique=True)
                self.tail_ids, self.tail_vecs = self.tail_ids[keep], self.tail_vecs[keep]
        self.seen = (count, mx)
        return True

    def search(
        self, q: np.ndarray, k: int, cand: np.ndarray | None, ef_search: int, threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of the (unit) queries among the loaded live vectors (in ``cand``, sorted, if given)."""
        if self.mode == "exact":
            ids, vecs = keep_candidates(self.ids, self.vecs, cand)
            return exact_block(q, vecs, ids, k)
        parts = [ann_search(self.index, self.index_live, q, k, cand, ef_search, threads)]
        if len(self.tail_ids):
            ids, vecs = keep_candidates(self.tail_ids, self.tail_vecs, cand)
            parts.append(exact_block(q, vecs, ids, k))
        return merge(parts, len(q), k)

    def reusable_index(self, state: dict | None) -> Any:
        """The loaded graph when it is exactly what the file of ``state`` holds (deletion marks
        removed, as the file carries none), else None; a writer then skips re-reading the file."""
        if self.mode != "ann" or self.state != state or self.index is None or isinstance(self.index, MappedIndex):
            return None
        for label in np.setdiff1d(self.index_ids, self.index_live, assume_unique=True).tolist():
            self.index.unmark_deleted(label)
        return self.index

    def counts(self) -> dict[str, int]:
        """How many vectors are held, for ``stats``."""
        if self.mode == "exact":
            return {"live_count": int(len(self.ids))}
        return {
            "live_count": int(len(self.index_live) + len(self.tail_ids)),
            "index_elements": int(len(self.index_ids)),
            "index_live": int(len(self.index_live)),
            "index_deleted": int(len(self.index_ids) - len(self.index_live)),
            "tail_count": int(len(self.tail_ids)),
        }
