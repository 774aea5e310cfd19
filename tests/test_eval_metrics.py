"""The metric functions of xmr eval, on hand-built rankings whose values are worked out here by hand,
and cross-checked against scikit-learn (a test-only dependency)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, ndcg_score

from xmr.evaluate import metrics as m

L2, L3, L4 = math.log2(2), math.log2(3), math.log2(4)


def test_average_precision_by_hand() -> None:
    ranking = [1, 0, 1, 0, 0, 1]  # relevant at ranks 1, 3, 6: precision there 1/1, 2/3, 3/6
    assert m.average_precision(ranking) == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)
    # a fourth relevant item never retrieved counts as precision 0
    assert m.average_precision(ranking, n_relevant=4) == pytest.approx((1 + 2 / 3 + 3 / 6) / 4)
    assert m.average_precision([1, 1, 0]) == 1.0
    assert m.average_precision([0, 0, 1], n_relevant=1) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        m.average_precision([0, 0])
    with pytest.raises(ValueError):
        m.average_precision([1, 1], n_relevant=1)


def test_reciprocal_rank_and_recall_at_k_by_hand() -> None:
    ranking = [0, 0, 1, 0, 1]
    assert m.reciprocal_rank(ranking) == pytest.approx(1 / 3)
    assert m.reciprocal_rank([0, 0, 0]) == 0.0
    # recall@k: is any relevant item among the first k
    assert [m.recall_at_k(ranking, k) for k in (1, 2, 3, 5, 10)] == [0.0, 0.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        m.recall_at_k(ranking, 0)


def test_ndcg_with_graded_ties_by_hand() -> None:
    gains = [3, 1, 2, 0]
    scores = [0.9, 0.7, 0.7, 0.1]  # ranks: A, then B and C tied on ranks 2-3, then D
    dcg = 3 / L2 + (1 + 2) / 2 * (1 / L3 + 1 / L4)  # the tie shares its mean gain 1.5 over both ranks
    ideal = 3 / L2 + 2 / L3 + 1 / L4
    assert m.dcg_at_k(gains, scores) == pytest.approx(dcg)
    assert m.ndcg_at_k(gains, scores) == pytest.approx(dcg / ideal)
    # @2 cuts through the tie: only its first rank counts
    assert m.ndcg_at_k(gains, scores, 2) == pytest.approx((3 / L2 + 1.5 / L3) / (3 / L2 + 2 / L3))
    # without the tie the order decides: C (gain 2) before B is ideal
    assert m.ndcg_at_k(gains, [0.9, 0.6, 0.7, 0.1]) == pytest.approx(1.0)
    # a truncated list normalised by every relevant item of the collection
    assert m.ndcg_at_k([1, 0], [2.0, 1.0], ideal_gains=[1, 1]) == pytest.approx(1 / (1 + 1 / L3))
    assert m.ndcg_at_k([0, 0], [1.0, 0.5]) == 0.0


def test_ece_by_hand() -> None:
    conf = [0.05, 0.15, 0.15, 0.85, 0.95, 0.95]
    rel = [0, 0, 1, 1, 1, 0]
    # bins [0,.1): gap |0-.05|, n=1; [.1,.2): |.5-.15|, n=2; [.8,.9): |1-.85|, n=1; [.9,1]: |.5-.95|, n=2
    expected = (1 * 0.05 + 2 * 0.35 + 1 * 0.15 + 2 * 0.45) / 6
    ece, bins = m.expected_calibration_error(conf, rel, 10)
    assert ece == pytest.approx(expected)
    assert [b.count for b in bins] == [1, 2, 0, 0, 0, 0, 0, 0, 1, 2]
    assert bins[1].observed == pytest.approx(0.5) and bins[1].confidence == pytest.approx(0.15)
    assert bins[2].observed is None
    # a perfectly calibrated set, and 1.0 falls in the last bin
    ece, bins = m.expected_calibration_error([1.0, 1.0, 0.0], [1, 1, 0], 4)
    assert ece == 0.0 and bins[-1].count == 2
    with pytest.raises(ValueError):
        m.expected_calibration_error([1.5], [1])


def test_precision_threshold_keeps_tied_scores_together() -> None:
    scores = [5, 4, 3, 3, 2, 1]
    rel = [1, 1, 1, 0, 1, 0]
    # cuts after a whole tie group: precision 1 (k=1), 1 (k=2), 3/4 (k=4, both 3s), 4/5 (k=5), 4/6
    t = m.precision_threshold(scores, rel, 0.75)
    assert (t.score, t.kept) == (2, 5) and t.precision == pytest.approx(0.8) and t.recall == pytest.approx(1.0)
    # 0.9: keeping "3" would also keep its irrelevant twin (3/4), so the threshold stays at 4
    t = m.precision_threshold(scores, rel, 0.9)
    assert (t.score, t.kept, t.precision, t.recall) == (4, 2, 1.0, 0.5)
    assert m.precision_threshold([1, 2], [0, 0]) is None
    assert m.precision_threshold([3, 2], [0, 1], 0.9) is None  # the best result is wrong


def test_cross_check_with_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(2, 30))
        gains = rng.integers(0, 4, n).astype(float)
        tied = rng.integers(0, 6, n).astype(float)  # many ties
        for k in (None, 1, 3, 10):
            assert m.ndcg_at_k(gains, tied, k) == pytest.approx(ndcg_score([gains], [tied], k=k), abs=1e-12)
        rel = rng.integers(0, 2, n)
        if not rel.any():
            continue
        scores = rng.permutation(n).astype(float)  # AP: distinct scores (sklearn's step-wise AP equals it then)
        ranked = rel[np.argsort(-scores)]
        assert m.average_precision(ranked) == pytest.approx(average_precision_score(rel, scores), abs=1e-12)


@pytest.mark.parametrize(("n", "r", "depth"), [(10, 3, 100), (23, 3, 100), (50, 5, 10), (7, 1, 100), (40, 6, 5)])
def test_chance_levels_match_random_rankings(n: int, r: int, depth: int) -> None:
    rng = np.random.default_rng(n * 100 + r)
    base = np.zeros(n, bool)
    base[:r] = True
    runs = [rng.permutation(base)[:depth] for _ in range(5000)]
    sim_ap = np.mean([m.average_precision(x, min(r, depth)) if x.any() else 0.0 for x in runs])
    sim_rr = np.mean([m.reciprocal_rank(x) for x in runs])
    sim_r1 = np.mean([m.recall_at_k(x, 1) for x in runs])
    sim_r5 = np.mean([m.recall_at_k(x, 5) for x in runs])
    assert m.chance_average_precision(n, r, depth) == pytest.approx(sim_ap, abs=0.02)
    assert m.chance_reciprocal_rank(n, r, depth) == pytest.approx(sim_rr, abs=0.02)
    assert m.chance_recall_at_k(n, r, 1) == pytest.approx(r / n)
    assert m.chance_recall_at_k(n, r, 5) == pytest.approx(sim_r5, abs=0.025)
    assert sim_r1 == pytest.approx(r / n, abs=0.025)


def test_percentile_and_normal_cdf() -> None:
    assert m.percentile([1, 2, 3, 4], 50) == 2.5
    assert m.percentile([], 50) is None
    assert m.normal_cdf([0.0, 1.6448536])[0] == 0.5
    assert m.normal_cdf([1.6448536])[0] == pytest.approx(0.95, abs=1e-6)
