"""Building an hnswlib graph from the catalogue: incrementally on top of the last file, or anew.

The file holds no deletion marks (deletions are re-derived from the live-id set
at every open); its ``deleted_count`` says how many of its elements were no
longer live at build time, and once that exceeds ``REBUILD_DELETED_FRACTION``
of the elements the next build starts from scratch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from xmr.store.hnsw_file import METRIC, hnswlib_version
from xmr.store.source import VectorSource

# Share of a file's elements that may be deleted before a checkpoint rebuilds.
REBUILD_DELETED_FRACTION = 0.25


@dataclass(frozen=True)
class HnswParams:
    """HNSW build/search parameters.

    Measured with benchmarks/search.py on 512-d clustered synthetic vectors
    (results/search.txt), M=16, ef_construction=200, recall@10 vs exact:

        ef      64      100     150     200     256
        10k     0.9995  1.0     1.0     1.0     1.0
        100k    0.9955  0.998   1.0     1.0     1.0
        1M      0.905   0.950   0.974   0.9785  0.9855   (p50 1.14 ms at ef=200)

    A second 1M build gave 0.9435 at ef=100 and 0.963 at ef=150 (builds are
    multi-threaded, so graphs differ run to run): ef=100 is not enough at 1M,
    150 clears 0.95 by little, so ef_search=200 (0.9785, +0.2 ms over 150)
    leaves margin for real embeddings, which are less clustered than the
    synthetic set. ef grows with k: ef = max(ef_search, k). Build cost on the
    2-core machine: 100k in 17 s idle (raw hnswlib) / 41 s through
    checkpoint at load ~4; 1M in 854 s at load ~4.5 (1417 s in a run at
    load ~7). The file is ~2.1 KB a vector.
    """

    M: int = 16
    ef_construction: int = 200
    ef_search: int = 200
    seed: int = 100


DEFAULT_PARAMS = HnswParams()


class HnswBuilder:
    """Adds the catalogue's vectors of one (space, model) to an hnswlib graph."""

    def __init__(
        self,
        source: VectorSource,
        space: str,
        model_id: str,
        dim: int,
        params: HnswParams,
        num_threads: int,
        check_batch: Callable[[np.ndarray], None],
    ) -> None:
        self.source, self.space, self.model_id, self.dim = source, space, model_id, int(dim)
        self.params, self.num_threads, self.check_batch = params, num_threads, check_batch

    def build(self, index: Any, prev: dict | None, reason: str | None, count: int) -> tuple[Any, dict, str | None]:
        """(graph, state fields, why it was rebuilt): ``index`` (None: rebuild) extended by the
        vectors after ``prev``'s max id, or a new graph of every live vector (``count`` of them)."""
        import hnswlib

        added = 0
        if index is not None:
            assert prev is not None
            after = int(prev["max_vector_id"])
            max_added = after
            for ids, vecs in self.source.iter_vectors(self.space, self.model_id, after_id=after):
                added += self._add(index, ids, vecs)
                max_added = int(ids[-1])
            deleted, labels = self._deleted(index)
            if deleted > REBUILD_DELETED_FRACTION * labels:
                reason = f"{deleted} of {labels} elements deleted"
                index = None
        if index is None:
            index = hnswlib.Index(space=METRIC, dim=self.dim)
            index.init_index(
                max_elements=max(count, 1),
                M=self.params.M,
                ef_construction=self.params.ef_construction,
                random_seed=self.params.seed,
            )
            max_added = 0
            for ids, vecs in self.source.iter_vectors(self.space, self.model_id, after_id=0):
                self._add(index, ids, vecs)
                max_added = int(ids[-1])
            added = index.element_count
            deleted, _ = self._deleted(index)
            mode = "full"
        else:
            mode, reason = "incremental", None
        fields = {
            "element_count": int(index.element_count),
            "deleted_count": int(deleted),
            "max_added": int(max_added),
            "M": self.params.M,
            "ef_construction": self.params.ef_construction,
            "hnswlib": hnswlib_version(),
            "build": mode,
            "added": int(added),
        }
        return index, fields, reason

    def _add(self, index: Any, ids: np.ndarray, vecs: np.ndarray) -> int:
        self.check_batch(vecs)
        needed = index.element_count + len(ids)
        if needed > index.max_elements:  # geometric: resize copies the whole graph
            index.resize_index(max(needed, int(index.max_elements * 1.5)))
        index.add_items(np.ascontiguousarray(vecs, np.float32), np.asarray(ids, np.int64), num_threads=self.num_threads)
        return len(ids)

    def _deleted(self, index: Any) -> tuple[int, int]:
        """(elements of the graph no longer live, elements)."""
        labels = np.sort(np.asarray(index.get_ids_list(), dtype=np.int64))
        live = self.source.live_vector_ids(self.space, self.model_id)
        return len(np.setdiff1d(labels, live, assume_unique=True)), len(labels)
