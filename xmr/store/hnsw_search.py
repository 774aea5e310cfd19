"""How a loaded hnswlib graph answers one search: the query strategy of the hnswlib backend.

A candidate subset is searched the cheapest way its size allows: a small one
exactly over its stored vectors, a large share of the index by over-fetching
from one unfiltered query, anything between by hnswlib's filtered walk. A
mapped file (``MappedIndex``) is always scanned exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xmr.store.mapped import MappedIndex
from xmr.store.topk import empty, exact_block, in_sorted, merge, sorted_intersection

# A candidate subset at most this large (or under SUBSET_EXACT_FRACTION of the
# index) is searched exactly via get_items: cheaper than a filtered HNSW walk,
# which must expand ~ef/fraction nodes through a Python callback.
SUBSET_EXACT_MAX = 20_000
SUBSET_EXACT_FRACTION = 0.02

# A candidate subset at least this large a share of the index (a segment kind, typically) is
# searched by one unfiltered query for OVERFETCH_FACTOR * k / share neighbours, filtered after:
# far cheaper than get_items (~40 us a vector) or a Python filter callback per visited node.
OVERFETCH_MIN_SHARE = 0.05
OVERFETCH_FACTOR = 2.0

_EXACT_BATCH = 20_000


def ann_search(
    index: Any, index_live: np.ndarray, q: np.ndarray, k: int, cand: np.ndarray | None, ef_search: int, threads: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of ``q`` among the live labels of ``index`` (and ``cand``, sorted, if given)."""
    m = len(q)
    live = index_live
    if isinstance(index, MappedIndex):
        return index.search(q, k, live if cand is None else sorted_intersection(cand, live))
    filt = None
    if cand is not None:
        live = sorted_intersection(cand, live)
        share = len(live) / max(1, len(index_live))
        if share >= OVERFETCH_MIN_SHARE and len(live):
            # a large share: the filtered walk below needs only ~ef/share expansions when this misses
            found = _overfetch(index, len(index_live), q, min(k, len(live)), live, share, ef_search, threads)
            if found is not None:
                return found
        elif len(live) <= max(SUBSET_EXACT_MAX, SUBSET_EXACT_FRACTION * len(index_live)):
            return exact_from_index(index, q, live, k)
        filt = set(live.tolist()).__contains__
    kk = min(k, len(live))
    if kk == 0:
        return empty(m)
    for ef in (max(ef_search, kk), max(4 * ef_search, 2 * kk)):
        index.set_ef(ef)
        try:
            # a Python filter is called under the GIL: threads would only contend
            labels, dist = index.knn_query(q, k=kk, num_threads=1 if filt else threads, filter=filt)
        except RuntimeError:  # fewer than kk reachable; retry wider, then exact
            continue
        return labels.astype(np.int64), (1.0 - dist).astype(np.float32)
    return exact_from_index(index, q, live, k)


def _overfetch(
    index: Any, n_live: int, q: np.ndarray, kk: int, members: np.ndarray, share: float, ef_search: int, threads: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Top ``kk`` among ``members`` (sorted ids, a large share of the index) from one unfiltered
    query for ``OVERFETCH_FACTOR * kk / share`` neighbours; None when some row got too few."""
    fetch = min(n_live, int(OVERFETCH_FACTOR * kk / share) + 16)
    index.set_ef(max(ef_search, fetch))
    try:
        labels, dist = index.knn_query(q, k=fetch, num_threads=threads)
    except RuntimeError:
        return None
    labels = labels.astype(np.int64)
    hit = in_sorted(members, labels)
    if (hit.sum(axis=1) < kk).any():
        return None
    order = np.argsort(~hit, axis=1, kind="stable")[:, :kk]  # members first, in rank order
    return np.take_along_axis(labels, order, axis=1), (1.0 - np.take_along_axis(dist, order, axis=1)).astype(np.float32)


def exact_from_index(index: Any, q: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact search over ``ids`` (live labels of the loaded index), vectors via get_items."""
    m = len(q)
    best = empty(m)
    for s in range(0, len(ids), _EXACT_BATCH):
        chunk = ids[s : s + _EXACT_BATCH]
        vecs = np.asarray(index.get_items(chunk), dtype=np.float32)
        best = merge([best, exact_block(q, vecs, chunk, k)], m, k)
    return best
