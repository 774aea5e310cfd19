"""Keyword + semantic fusion: reciprocal-rank fusion against a calibrated keyword score.

A constructed set, simulated at the level the fusion works on (scores, not files), so that
the semantic side behaves like a real calibrated search (the fake test encoders give random
similarities, which would measure nothing). Per query, a collection of ``--files`` files:

* semantic scores are calibrated z-like numbers (xmr.calibrate): unrelated files ~ N(0, 1),
  relevant ones ~ N(``--signal``, 1.2);
* the keyword index: a query has two words; a relevant file's name or title holds both with
  probability 0.2, one with 0.25; an unrelated file holds one word with probability 0.01 and
  both with 0.001 (names share words: "invoice", "harbour"). bm25 ~ words matched x (1 + 0.2 noise).

Two tasks: *topical* (10 relevant files per query: nDCG@10, P@10) and *known item* (one file whose
name holds both words, its content weaker evidence: N(1.5, 1); MRR, and how often it is first).
Compared: semantic only, keyword only, RRF (k = 60) and the calibrated sum (xmr.fusion.fuse).

    python benchmarks/fusion.py [--queries 300] [--files 2000] [--signal 2.5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xmr.fusion import fuse, fuse_rrf, keyword_scores  # noqa: E402


def _keyword(rng: np.random.Generator, relevant: np.ndarray) -> dict[str, float]:
    n = len(relevant)
    u = rng.random(n)
    words = np.where(relevant, np.where(u < 0.2, 2, np.where(u < 0.45, 1, 0)), 0)
    words = np.where(~relevant, np.where(u < 0.001, 2, np.where(u < 0.011, 1, 0)), words)
    bm25 = words * (1 + 0.2 * rng.standard_normal(n))
    order = np.argsort(-bm25)
    return keyword_scores([(str(i), float(bm25[i])) for i in order if words[i] > 0])


def _rank(scores: dict[str, float]) -> list[int]:
    return [int(p) for p in sorted(scores, key=lambda p: (-scores[p], int(p)))]


def _ndcg10(ranked: list[int], relevant: np.ndarray) -> float:
    gains = [1.0 / np.log2(i + 2) for i, f in enumerate(ranked[:10]) if relevant[f]]
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(10, int(relevant.sum()))))
    return sum(gains) / ideal


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--signal", type=float, default=2.5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    methods = {
        "semantic only": lambda s, k: s,
        "keyword only": lambda s, k: k,
        "RRF (k=60)": fuse_rrf,
        "calibrated sum": fuse,
    }
    topical = {m: [[], []] for m in methods}
    known = {m: [[], []] for m in methods}
    for _ in range(args.queries):
        relevant = np.zeros(args.files, bool)
        relevant[rng.choice(args.files, 10, replace=False)] = True
        z = rng.standard_normal(args.files) + relevant * (args.signal + 0.2 * rng.standard_normal(args.files))
        sem = {str(i): float(v) for i, v in enumerate(z)}
        kw = _keyword(rng, relevant)
        for m, f in methods.items():
            ranked = _rank(f(sem, kw))
            topical[m][0].append(_ndcg10(ranked, relevant))
            topical[m][1].append(float(relevant[ranked[:10]].mean()))
        # known item: file 0 is named with both words; its content is weaker evidence
        target = np.zeros(args.files, bool)
        target[0] = True
        z = rng.standard_normal(args.files)
        z[0] = rng.normal(1.5, 1.0)
        sem = {str(i): float(v) for i, v in enumerate(z)}
        kw = _keyword(rng, np.zeros(args.files, bool))
        kw = keyword_scores(sorted([("0", 2.0), *((p, s / 2) for p, s in kw.items())], key=lambda t: -t[1]))
        for m, f in methods.items():
            ranked = _rank(f(sem, kw))
            pos = ranked.index(0) + 1 if 0 in ranked else args.files
            known[m][0].append(1.0 / pos)
            known[m][1].append(float(pos == 1))
    print(f"{args.queries} queries x {args.files} files, semantic signal {args.signal} (z of relevant files)")
    print(f"{'method':<16} {'nDCG@10':>8} {'P@10':>6}   {'known-item MRR':>14} {'first':>6}")
    for m in methods:
        print(
            f"{m:<16} {np.mean(topical[m][0]):>8.3f} {np.mean(topical[m][1]):>6.3f}"
            f"   {np.mean(known[m][0]):>14.3f} {np.mean(known[m][1]):>6.3f}"
        )


if __name__ == "__main__":
    main()
