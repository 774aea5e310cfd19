"""Exact top-k over in-memory blocks: the one place the store's exact math lives.

Every path that answers exactly (a small store, the tail past a checkpoint, a
candidate subset, the mapped scan, a brute-force ``exact_search``) ranks with
``topk`` and combines partial answers with ``merge``, so ties and dtypes agree.
"""

from __future__ import annotations

import numpy as np

QUERY_CHUNK = 1024  # query rows scored together by exact_block


def empty(m: int) -> tuple[np.ndarray, np.ndarray]:
    """The (ids, sims) of m queries that found nothing."""
    return np.empty((m, 0), np.int64), np.empty((m, 0), np.float32)


def topk(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k per row of ``sims`` (m, n), descending; ``ids`` is (n,) or (m, n)."""
    m, n = sims.shape
    kk = min(k, n)
    if kk <= 0:
        return empty(m)
    if kk < n:
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(n), (m, n))
    psims = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-psims, axis=1, kind="stable")
    sel = np.take_along_axis(part, order, axis=1)
    out_ids = ids[sel] if ids.ndim == 1 else np.take_along_axis(ids, sel, axis=1)
    return out_ids.astype(np.int64, copy=False), np.take_along_axis(psims, order, axis=1).astype(np.float32)


def in_sorted(members: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which of ``values`` (any shape) are in ``members`` (sorted, non-empty), by binary search."""
    pos = np.minimum(np.searchsorted(members, values), len(members) - 1)
    return members[pos] == values


def sorted_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The ids in both of two sorted, duplicate-free arrays (as ``np.intersect1d``), without
    sorting their concatenation: a search of the smaller in the larger, O(n log m)."""
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    if len(small) == 0 or len(large) == 0:
        return small[:0].astype(np.int64)
    return small[in_sorted(large, small)].astype(np.int64, copy=False)


def merge(parts: list[tuple[np.ndarray, np.ndarray]], m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best k per row over several partial (ids, sims) answers for the same m queries."""
    parts = [p for p in parts if p[0].shape[1]]
    if not parts:
        return empty(m)
    if len(parts) == 1:
        return parts[0][0][:, :k], parts[0][1][:, :k]
    ids = np.concatenate([p[0] for p in parts], axis=1)
    sims = np.concatenate([p[1] for p in parts], axis=1)
    return topk(sims, ids, k)


def exact_block(queries: np.ndarray, vecs: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of every query against an in-memory block, queries chunked."""
    m = len(queries)
    if len(ids) == 0 or k <= 0:
        return empty(m)
    out = [topk(queries[s : s + QUERY_CHUNK] @ vecs.T, ids, k) for s in range(0, m, QUERY_CHUNK)]
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


def keep_candidates(ids: np.ndarray, vecs: np.ndarray, cand: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The rows of (ids, vecs) whose id is among the sorted candidates (all of them for None)."""
    if cand is None:
        return ids, vecs
    keep = np.isin(ids, cand, assume_unique=True)
    return ids[keep], vecs[keep]
