"""Keyword + semantic fusion measured by ``xmr eval --fusion`` on a collection where names matter.

benchmarks/fusion.py compares the fusions on simulated scores; this one runs the real
pipeline (indexing, the SQLite FTS5 keyword index, xmr.search with its calibration) through
``xmr.evaluate.evaluate(..., EvalOptions(fusion=True))``. The encoders are the test ones of
tests/eval_encoders.py: a file's vector encodes its label, read from its content, plus
Gaussian noise of norm ``--noise`` times the signal's, so the semantic side is as good or as
bad as asked (random-weight CLIP/CLAP would measure nothing).

The collection: ``--per-label`` images, recordings and notes for each of the 6 labels, in
folders with neutral names (``batch-1`` ...), labelled by a CSV, among ``--distractors``
unlabelled notes (300; filler words, so a random vector). Names matter the way they do
on a real disk: a file's name holds its label's word with probability ``--named`` (0.4;
``amber-0007.png``), another label's word with probability ``--misnamed`` (0.05), and is
neutral otherwise (``IMG_0007.png``); a distractor's name is misnamed with the same
probability. Every label is queried by 5 captions holding its word
("the amber one", ...), so each text-query task runs 30 queries. Reported: semantic only,
keyword only, the calibrated sum ``xmr search`` uses, and reciprocal-rank fusion (k = 60).

    python benchmarks/fusion_eval.py [--noise 2,4] [--per-label 8] [--named 0.4] [--misnamed 0.05] [--distractors 300]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from eval_encoders import FILLER, LABELS, make_labelled_collection  # noqa: E402

from xmr.evaluate import EvalOptions, evaluate  # noqa: E402
from xmr.evaluate.report import FUSION_NAMES  # noqa: E402

CAPTIONS = ("{}", "the {} one", "some {}", "{} please", "{} here")
PREFIX = {".png": "IMG", ".wav": "rec", ".txt": "note"}


def make_collection(
    root: Path, per_label: int, named: float, misnamed: float, distractors: int, seed: int = 3
) -> Path:
    """The files of make_labelled_collection, renamed and spread over neutral folders, plus
    unlabelled notes; the labels CSV."""
    rng = np.random.default_rng(seed)
    made: dict[Path, str | None] = dict(make_labelled_collection(root / "_made", per_label=per_label))
    for i in range(distractors):  # no label word in the text: the encoder gives a random vector
        p = root / "_made" / f"distractor{i}.txt"
        p.write_text(" ".join(FILLER[int(j)] for j in rng.integers(0, len(FILLER), 12)) + f" {i}.\n")
        made[p] = None
    rows = []
    for n, (src, label) in enumerate(sorted(made.items(), key=lambda kv: str(kv[0]))):
        u = rng.random()
        if label is not None and u < named:
            stem = f"{label}-{n:04d}"
        elif u < (named if label is not None else 0.0) + misnamed:
            other = [lab for lab in LABELS if lab != label]
            stem = f"{other[int(rng.integers(len(other)))]}-{n:04d}"
        else:
            stem = f"{PREFIX[src.suffix]}_{n:04d}"
        dst = root / "files" / f"batch-{n % 4 + 1}" / f"{stem}{src.suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        if label is not None:
            rows.append([os.path.relpath(dst, root), label, ""])
    seen: dict[str, int] = {}
    for row in rows:  # each label's first rows carry its captions
        i = seen.get(row[1], 0)
        if i < len(CAPTIONS):
            row[2] = CAPTIONS[i].format(row[1])
        seen[row[1]] = i + 1
    labels_csv = root / "labels.csv"
    with open(labels_csv, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["path", "label", "caption"], *rows])
    return labels_csv


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--noise", default="2,4")
    ap.add_argument("--per-label", type=int, default=8)
    ap.add_argument("--named", type=float, default=0.4)
    ap.add_argument("--misnamed", type=float, default=0.05)
    ap.add_argument("--distractors", type=int, default=300, help="unlabelled notes")
    ap.add_argument("--max-queries", type=int, default=30, help="per task (the file-to-file tasks are not reported)")
    args = ap.parse_args()
    os.environ["XMR_BACKEND_CLIP"] = "eval_encoders:LabelClip"
    os.environ["XMR_BACKEND_CLAP"] = "eval_encoders:LabelClap"
    os.environ["XMR_CONCEPTS_ONLY"] = "1"
    with tempfile.TemporaryDirectory(prefix="xmr-fusion-eval-") as tmp:
        concepts = Path(tmp) / "concepts.txt"
        concepts.write_text("\n".join(LABELS) + "\n")
        os.environ["XMR_CONCEPTS"] = str(concepts)
        labels_csv = make_collection(
            Path(tmp) / "c", args.per_label, args.named, args.misnamed, args.distractors
        )
        files = sum(1 for _ in (Path(tmp) / "c" / "files").rglob("*.*"))
        print(
            f"{files} files ({args.per_label} images, recordings and notes per label, 6 labels; "
            f"{args.distractors} unlabelled notes), "
            f"named by label {args.named:.0%}, misnamed {args.misnamed:.0%}; 5 captions a label; "
            f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        for noise in [float(x) for x in args.noise.split(",")]:
            os.environ["EVAL_ENCODER_NOISE"] = str(noise)
            t0 = time.perf_counter()
            report = evaluate(
                Path(tmp) / "c" / "files",
                options=EvalOptions(labels_csv=str(labels_csv), workers=0, fusion=True, max_queries=args.max_queries),
            ).as_dict()
            print(f"\nencoder noise {noise:g} (noise norm / signal norm); {time.perf_counter() - t0:.0f} s")
            print(f"{'task':<14} {'ranking':<24} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6} {'nDCG@10':>8}")
            for t in report["tasks"]:
                for i, (method, m) in enumerate(t.get("fusion", {}).items()):
                    name = t["task"] if i == 0 else ""
                    print(
                        f"{name:<14} {FUSION_NAMES[method]:<24} {m['recall@1']:>6.3f} {m['recall@5']:>6.3f}"
                        f" {m['recall@10']:>6.3f} {m['mrr']:>6.3f} {m['ndcg@10']:>8.3f}"
                    )


if __name__ == "__main__":
    main()
