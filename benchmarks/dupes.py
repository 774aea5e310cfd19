"""``xmr dupes`` precision and recall on generated images.

A collection of ``--images`` pictures (96 x 96 JPEGs of smooth random scenes):

* bursts: ``--bursts`` scenes, each with three copies: resized to 75 %, recompressed at JPEG
  quality 70, cropped by 2 % (the duplicates to find);
* hard negatives: ``--reframed`` scenes shot again 3.5 % of the frame to the side (same colours and layout,
  another picture: close in a thumbnail's space, not a duplicate);
* the rest distinct scenes.

Indexed by ``xmr index`` with the thumbnail test encoder (``tests/fake_encoders.ThumbClip``: a
picture's vector is its centred 8 x 8 thumbnail), not CLIP: random-weight CLIP vectors say
nothing about which pictures look alike, and real weights cannot be downloaded here. The figure
therefore measures xmr's part -- neighbours from the vector index, the cosine threshold, the
dHash check, the grouping -- on an encoder for which copies are close and the reframed shots
are hard negatives; CLIP is more invariant to crops and recompression than a thumbnail, so its
recall should be no lower, and its precision rests on the same dHash check.

Pairs are scored: a pair of files in one predicted group is right when both come from one burst.
Printed with the dHash check and with the cosine threshold alone.

    python benchmarks/dupes.py [--images 10000] [--bursts 200] [--reframed 200]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def _scene(rng: np.random.Generator, shift: float = 0.0) -> object:
    from PIL import Image

    small = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((160, 128), Image.BICUBIC)
    left = int(shift * 160)
    return big.crop((left, 16, left + 96, 112))


def generate(root: Path, n: int, bursts: int, reframed: int, seed: int = 0) -> dict[str, int]:
    """Write the collection; returns path -> burst number (-1: not a duplicate of anything)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    truth: dict[str, int] = {}
    i = 0

    def save(img: object, name: str, group: int, **kw: object) -> None:
        nonlocal i
        path = root / f"d{i // 1000:02d}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, **kw)  # type: ignore[attr-defined]
        truth[str(path)] = group
        i += 1

    for b in range(bursts):
        base = _scene(rng)
        save(base, f"burst{b}_a.jpg", b, quality=92)
        save(base.resize((72, 72), Image.LANCZOS), f"burst{b}_small.png", b)  # type: ignore[attr-defined]
        save(base, f"burst{b}_q70.jpg", b, quality=70)
        save(base.crop((2, 2, 94, 94)), f"burst{b}_crop.jpg", b, quality=92)  # type: ignore[attr-defined]
    for r in range(reframed):
        state = rng.bit_generator.state
        save(_scene(rng), f"frame{r}_a.jpg", -1, quality=92)
        rng.bit_generator.state = state  # the same scene, shot again further right
        save(_scene(rng, shift=0.035), f"frame{r}_b.jpg", -1, quality=92)
    while i < n:
        save(_scene(rng), f"img{i}.jpg", -1, quality=92)
    return truth


def score(groups: list[list[str]], truth: dict[str, int]) -> tuple[float, float, int, int]:
    predicted = {tuple(sorted(p)) for g in groups for p in itertools.combinations(g, 2)}
    by_burst: dict[int, list[str]] = {}
    for path, b in truth.items():
        if b >= 0:
            by_burst.setdefault(b, []).append(path)
    actual = {tuple(sorted(p)) for g in by_burst.values() for p in itertools.combinations(g, 2)}
    right = len(predicted & actual)
    precision = right / len(predicted) if predicted else 1.0
    return precision, right / len(actual), len(predicted), len(actual)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--bursts", type=int, default=200)
    ap.add_argument("--reframed", type=int, default=200)
    args = ap.parse_args()
    os.environ["XMR_BACKEND_CLIP"] = "fake_encoders:ThumbClip"
    os.environ["XMR_BACKEND_CLAP"] = "fake_encoders:ThumbClap"
    os.environ["XMR_OFFLINE"] = "1"
    from xmr import dupes
    from xmr.indexer import IndexOptions, index

    with tempfile.TemporaryDirectory() as tmp:
        root, index_dir = Path(tmp) / "pics", Path(tmp) / "index"
        t = time.perf_counter()
        truth = generate(root, args.images, args.bursts, args.reframed)
        t_gen = time.perf_counter() - t
        t = time.perf_counter()
        report = index([root], index_dir=index_dir, options=IndexOptions(workers=1))
        t_index = time.perf_counter() - t
        assert report.failed == 0, report.errors[:3]
        print(f"{len(truth)} images ({args.bursts} bursts of 4, {args.reframed} reframed pairs); "
              f"generated in {t_gen:.0f} s, indexed in {t_index:.0f} s (ThumbClip encoder)")  # fmt: skip
        print(f"{'check':<28} {'threshold':>9} {'precision':>9} {'recall':>7} {'pairs found':>11} {'true':>5} {'s':>6}")
        for label, bits in (("cosine + dHash (default)", dupes.DHASH_MAX_BITS), ("cosine only", 64)):
            for threshold in (0.85, dupes.IMAGE_COSINE, 0.95):
                dupes.DHASH_MAX_BITS = bits
                t = time.perf_counter()
                found = dupes.find_dupes(index_dir=index_dir, types=["image"], threshold=threshold)
                elapsed = time.perf_counter() - t
                p, r, n_found, n_true = score([[f["path"] for f in g.files] for g in found], truth)
                print(f"{label:<28} {threshold:>9.2f} {p:>9.3f} {r:>7.3f} {n_found:>11} {n_true:>5} {elapsed:>6.1f}")


if __name__ == "__main__":
    main()
