"""Retrieval and calibration metrics, pure numpy.

Rankings are given best first. Definitions (as in the cross-modal retrieval
literature, e.g. CLIP's Flickr30k/COCO tables):

- ``recall_at_k``: 1 if a relevant item is among the first k, else 0 (a query
  with several relevant items is answered once one of them is found); the mean
  over queries is "R@k".
- ``reciprocal_rank``: 1 / rank of the first relevant item (0 if none).
- ``average_precision``: mean of precision@i over the ranks i of the relevant
  items, divided by the number of relevant items ``n_relevant`` (relevant items
  never retrieved count as precision 0). Equals scikit-learn's
  ``average_precision_score`` on a complete ranking without tied scores.
- ``ndcg_at_k``: DCG with gain g and discount 1/log2(rank + 1), normalised by the
  ideal DCG; tied scores share the mean gain of their tie group over the ranks
  they span (scikit-learn's ``ndcg_score`` with ``ignore_ties=False``).
- ``expected_calibration_error``: sum over equal-width confidence bins of
  (bin share) * |observed rate - mean confidence|.
- ``precision_threshold``: the lowest score s such that the results scoring
  at least s are relevant with precision >= the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _bools(relevant: Sequence[bool] | np.ndarray) -> np.ndarray:
    return np.asarray(relevant, dtype=bool).ravel()


def recall_at_k(relevant: Sequence[bool] | np.ndarray, k: int) -> float:
    """1.0 if any of the first ``k`` ranked items is relevant, else 0.0."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float(_bools(relevant)[:k].any())


def reciprocal_rank(relevant: Sequence[bool] | np.ndarray) -> float:
    rel = _bools(relevant)
    hits = np.flatnonzero(rel)
    return 1.0 / (hits[0] + 1) if len(hits) else 0.0


def average_precision(relevant: Sequence[bool] | np.ndarray, n_relevant: int | None = None) -> float:
    """AP of one ranking; ``n_relevant`` (default: the relevant items in the ranking) is the denominator."""
    rel = _bools(relevant)
    total = int(rel.sum()) if n_relevant is None else int(n_relevant)
    if total < 1:
        raise ValueError("average precision needs at least one relevant item")
    if rel.sum() > total:
        raise ValueError(f"{int(rel.sum())} relevant items ranked but n_relevant is {total}")
    ranks = np.flatnonzero(rel) + 1
    precision_at_hits = np.arange(1, len(ranks) + 1) / ranks
    return float(precision_at_hits.sum() / total)


def _discounts(n: int, k: int | None) -> np.ndarray:
    d = 1.0 / np.log2(np.arange(n) + 2.0)
    if k is not None:
        d[k:] = 0.0
    return d


def dcg_at_k(gains: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray, k: int | None = None) -> float:
    """DCG of items ranked by ``scores`` (descending), ties sharing their group's mean gain."""
    g = np.asarray(gains, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if g.shape != s.shape:
        raise ValueError(f"{len(g)} gains but {len(s)} scores")
    if not len(g):
        return 0.0
    _, inverse, counts = np.unique(-s, return_inverse=True, return_counts=True)
    group_gain = np.zeros(len(counts))
    np.add.at(group_gain, inverse, g)
    group_gain /= counts
    cum = np.cumsum(_discounts(len(g), k))
    ends = np.cumsum(counts) - 1  # last rank (0-based) of each tie group, best group first
    group_discount = np.diff(np.concatenate([[0.0], cum[ends]]))
    return float((group_gain * group_discount).sum())


def ndcg_at_k(
    gains: Sequence[float] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    k: int | None = None,
    *,
    ideal_gains: Sequence[float] | np.ndarray | None = None,
) -> float:
    """nDCG@k of items ranked by ``scores``; 0.0 when no item has a gain.

    ``ideal_gains`` are the gains of every relevant item, retrieved or not (a
    truncated result list is normalised by what the whole collection allows);
    by default the ideal is ``gains`` sorted.
    """
    ideal = np.sort(np.asarray(gains if ideal_gains is None else ideal_gains, dtype=np.float64).ravel())[::-1]
    best = float((ideal * _discounts(len(ideal), k)).sum())
    if best <= 0:
        return 0.0
    return dcg_at_k(gains, scores, k) / best


@dataclass(frozen=True)
class CalibrationBin:
    lo: float
    hi: float
    count: int
    confidence: float | None  # mean confidence of the bin's pairs
    observed: float | None  # share of them that are relevant

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "lo": round(self.lo, 6),
            "hi": round(self.hi, 6),
            "count": self.count,
            "confidence": _round(self.confidence),
            "observed": _round(self.observed),
        }


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(x, digits)


def expected_calibration_error(
    confidence: Sequence[float] | np.ndarray, relevant: Sequence[bool] | np.ndarray, n_bins: int = 10
) -> tuple[float, list[CalibrationBin]]:
    """(ECE, bins) over ``n_bins`` equal-width bins of [0, 1]; the last bin includes 1."""
    c = np.asarray(confidence, dtype=np.float64).ravel()
    rel = _bools(relevant).astype(np.float64)
    if c.shape != rel.shape:
        raise ValueError(f"{len(c)} confidences but {len(rel)} relevance labels")
    if n_bins < 1:
        raise ValueError(f"need at least one bin, got {n_bins}")
    if len(c) and (c.min() < 0 or c.max() > 1):
        raise ValueError("confidences must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = which == b
        n = int(mask.sum())
        if n:
            conf, obs = float(c[mask].mean()), float(rel[mask].mean())
            ece += n / len(c) * abs(obs - conf)
            bins.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), n, conf, obs))
        else:
            bins.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), 0, None, None))
    return float(ece), bins


@dataclass(frozen=True)
class Threshold:
    score: float  # keep results with score >= this
    precision: float  # of the results kept
    recall: float  # share of all relevant results that are kept
    kept: int


def precision_threshold(
    scores: Sequence[float] | np.ndarray, relevant: Sequence[bool] | np.ndarray, target: float = 0.9
) -> Threshold | None:
    """The lowest score threshold whose kept results reach ``target`` precision; None if none does."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    rel = _bools(relevant)
    if s.shape != rel.shape:
        raise ValueError(f"{len(s)} scores but {len(rel)} relevance labels")
    if not len(s) or not rel.any():
        return None
    order = np.argsort(-s, kind="stable")
    s, rel = s[order], rel[order]
    hits = np.cumsum(rel)
    kept = np.arange(1, len(s) + 1)
    # a threshold keeps a whole tie group: only the last position of each group is a cut
    cut = np.append(s[1:] != s[:-1], True)
    ok = np.flatnonzero(cut & (hits / kept >= target))
    if not len(ok):
        return None
    i = int(ok[-1])
    precision, recall = float(hits[i] / kept[i]), float(hits[i] / rel.sum())
    return Threshold(score=float(s[i]), precision=precision, recall=recall, kept=int(kept[i]))


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    """The q-th percentile (linear interpolation); None for no values."""
    v = np.asarray(values, dtype=np.float64).ravel()
    return float(np.percentile(v, q)) if len(v) else None


def normal_cdf(z: Sequence[float] | np.ndarray) -> np.ndarray:
    """Phi(z): the 0..1 form of xmr's calibrated score (see xmr.calibrate)."""
    return np.array([0.5 * math.erfc(-float(x) / math.sqrt(2.0)) for x in np.asarray(z).ravel()])


# -- what a random ranking scores: N candidates, R of them relevant, the first ``depth`` kept -----


def _check_counts(n: int, r: int) -> None:
    if not 0 < r <= n:
        raise ValueError(f"need 0 < relevant <= candidates, got {r} of {n}")


def chance_recall_at_k(n: int, r: int, k: int) -> float:
    """P(a relevant item among the first k of a random ranking) = 1 - C(N-R, k) / C(N, k)."""
    _check_counts(n, r)
    miss = 1.0
    for i in range(min(k, n)):
        miss *= max(n - r - i, 0) / (n - i)
    return 1.0 - miss


def chance_reciprocal_rank(n: int, r: int, depth: int | None = None) -> float:
    """E[1 / rank of the first relevant item], 0 beyond ``depth``."""
    _check_counts(n, r)
    last = min(n - r + 1, depth or n)
    total, none_before = 0.0, 1.0  # none_before: P(ranks 1..i-1 all irrelevant)
    for i in range(1, last + 1):
        total += none_before * r / (n - i + 1) / i
        none_before *= (n - r - i + 1) / (n - i + 1)
    return total


def chance_average_precision(n: int, r: int, depth: int | None = None) -> float:
    """E[AP] of a random ranking, AP over the first ``depth`` with denominator min(R, depth).

    A relevant item sits at each rank i with probability 1/N, with (i-1)(R-1)/(N-1)
    other relevant items above it on average, so E[precision there] = (1 + (i-1)(R-1)/(N-1)) / i.
    """
    _check_counts(n, r)
    d = min(depth or n, n)
    i = np.arange(1, d + 1, dtype=np.float64)
    p = (1.0 + (i - 1.0) * (r - 1) / max(n - 1, 1)) / i
    return float(r / n * p.sum() / min(r, d))
