"""What bf16 and int8 cost in fidelity: cosine to fp32 and recall@10 of the fp32 neighbours.

For each tower that indexing uses (CLIP images, CLIP text, CLAP text; CLAP
audio with ``--windows``), ``--items`` inputs are embedded at fp32, bf16 and
int8 through the encoder ``xmr index`` uses (:func:`xmr.encoders.engine.index_encoder`:
CLIP images in ONNX Runtime, int8 images through the int8 tower; the rest through the
backends), with the random-weight default architectures. Printed per tower and precision:

* the minimum and mean cosine of each input's vector to its fp32 vector;
* recall@10: for ``--queries`` inputs taken as queries (at that precision), the share
  of their 10 nearest fp32 neighbours among the other items (at fp32) that the
  neighbours at that precision (among the items at that precision) find -- what an
  index built at that precision loses against one built at fp32.

Random weights make every vector of a tower close to every other (cosines of 0.9 and
more between unrelated photos), so neighbour order hangs on small differences: these
recalls are a pessimistic bound for real weights, not a measure of them.

    python benchmarks/precision.py [--items 5000] [--queries 500] [--windows 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _models import NOTE_WORDS, clap_checkpoint, clip_checkpoint, xmr_env  # noqa: E402

PRECISIONS = ("fp32", "bf16", "int8")


def recall_at_10(ref: np.ndarray, low: np.ndarray, queries: np.ndarray) -> float:
    hits = 0
    for q in queries:
        a = ref @ ref[q]
        b = low @ low[q]
        a[q] = b[q] = -np.inf  # the item itself is not its neighbour
        want = set(np.argpartition(-a, 10)[:10].tolist())
        got = set(np.argpartition(-b, 10)[:10].tolist())
        hits += len(want & got)
    return hits / (10 * len(queries))


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--windows", type=int, default=0, help="10 s audio windows for CLAP's audio tower (0: skip)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="xmr-precision-") as tmp_name:
        tmp = Path(tmp_name)
        clip = clip_checkpoint(tmp / "ckpt")
        clap, tok = clap_checkpoint(tmp / "ckpt")
        os.environ.update(xmr_env(dict(os.environ), tmp, tok))
        from xmr.encoders import engine
        from xmr.settings import Settings

        def settings(p: str) -> Settings:
            return Settings.from_env(
                clip_model=f"ViT-B-32:{clip}", clap_model=str(clap), device="cpu", precision=p
            )

        rng = np.random.default_rng(0)
        notes = [" ".join(rng.choice(NOTE_WORDS, size=int(rng.integers(6, 15)))) for _ in range(args.items)]
        pre = engine.index_encoder("clip", settings("fp32")).image_preprocessor()
        from index import make_photo  # benchmarks/index.py

        pixels = np.empty((args.items, 3, *pre.size), np.float32)
        photo = tmp / "p.jpg"
        for i in range(args.items):
            make_photo(photo, i, (320, 240))
            pixels[i] = pre(photo)
        windows = (rng.standard_normal((args.windows, 480_000)) * 0.1).astype(np.float32) if args.windows else None
        queries = rng.choice(args.items, size=min(args.queries, args.items), replace=False)

        def in_batches(embed, x: np.ndarray, n: int) -> np.ndarray:
            return np.concatenate([embed(x[i : i + n]) for i in range(0, len(x), n)])

        vecs: dict[tuple[str, str], np.ndarray] = {}
        for p in PRECISIONS:
            clip_enc = engine.index_encoder("clip", settings(p))
            clap_enc = engine.index_encoder("clap", settings(p))
            jobs = [
                ("clip image", clip_enc.embed_images, pixels, 64),
                ("clip text", clip_enc.embed_texts, notes, len(notes)),
                ("clap text", clap_enc.embed_texts, notes, len(notes)),
            ]
            if windows is not None:
                jobs.append(("clap audio", clap_enc.embed_audio, windows, 8))
            for tower, embed, inputs, n in jobs:
                t = time.perf_counter()
                out = in_batches(embed, inputs, n) if n < len(inputs) else embed(inputs)
                vecs[(tower, p)] = np.asarray(out, np.float32)
                print(f"{tower} at {p}: {len(out)} vectors in {time.perf_counter() - t:.1f}s", flush=True)

        print(f"\n{args.items} items per tower ({args.windows or 'no'} audio windows), "
              f"{len(queries)} queries, {os.cpu_count()} cores")
        print("| tower | precision | min cosine to fp32 | mean cosine | recall@10 of the fp32 neighbours |")
        print("|---|---|---|---|---|")
        for tower in dict.fromkeys(t for t, _ in vecs):
            ref = vecs[(tower, "fp32")]
            q = queries[queries < len(ref)]
            for p in PRECISIONS[1:]:
                low = vecs[(tower, p)]
                cos = (ref * low).sum(axis=1)
                print(f"| {tower} | {p} | {cos.min():.5f} | {cos.mean():.5f} | {recall_at_10(ref, low, q):.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
