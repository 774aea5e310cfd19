"""Keyword + semantic fusion: one ranked list from the calibrated semantic scores and the
keyword index's bm25 ranking.

Two ways were measured, on simulated scores (benchmarks/fusion.py) and through ``xmr eval
--fusion`` on a generated collection (benchmarks/fusion_eval.py); figures in docs/metadata.md:

* reciprocal-rank fusion (RRF): ``1/(RRF_K + semantic rank) + 1/(RRF_K + keyword rank)``;
* a calibrated keyword score added to the semantic one: the keyword match's bm25 relative to
  the query's best keyword match, scaled to ``KEYWORD_SCORE`` (a strong semantic match on the
  calibrated, z-like scale), added to the file's semantic score (its negative part dropped: a
  name match is not evidence against a file).

xmr uses the calibrated sum (``fuse``): it ranked better on both sets in all but a few figures, keeps the
score on the semantic scale (so ``--min-score`` and the scores shown keep their meaning), and a
file matched both ways scores the sum of its two parts, above one matched by either alone at
the same strength.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

RRF_K = 60
KEYWORD_SCORE = 4.0


def keyword_scores(matches: Sequence[tuple[str, float]]) -> dict[str, float]:
    """path -> calibrated keyword score, from (path, bm25; higher is better) best first."""
    if not matches:
        return {}
    best = max(score for _, score in matches)
    if best <= 0:
        return {path: KEYWORD_SCORE for path, _ in matches}
    return {path: KEYWORD_SCORE * max(score, 0.0) / best for path, score in matches}


def fuse(semantic: Mapping[str, float], keyword: Mapping[str, float]) -> dict[str, float]:
    """The calibrated sum: a file's semantic score plus its keyword score."""
    out = dict(semantic)
    for path, kw in keyword.items():
        out[path] = max(semantic.get(path, 0.0), 0.0) + kw
    return out


def fuse_rrf(semantic: Mapping[str, float], keyword: Mapping[str, float]) -> dict[str, float]:
    """Reciprocal-rank fusion of the two lists (kept for the comparison: benchmarks/fusion.py,
    ``xmr eval --fusion``)."""
    out: dict[str, float] = {}
    for scores in (semantic, keyword):
        for rank, path in enumerate(sorted(scores, key=lambda p: -scores[p]), 1):
            out[path] = out.get(path, 0.0) + 1.0 / (RRF_K + rank)
    return out
