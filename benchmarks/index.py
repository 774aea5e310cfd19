"""End-to-end indexing rate against the model-only encode rate of the same model.

Generates a folder of photo-sized JPEGs, builds the real CLIP architecture with
random weights (the speed of a network does not depend on its weights), saves
it and loads it through the user-facing checkpoint option, then measures:

* model-only: ``ClipEncoder.embed_images`` on already-preprocessed pixels, in
  the encoder's own batches (what the model alone can do on this machine);
* pipeline: ``xmr.indexer.index()`` on the folder (walk, hash, classify, decode
  and preprocess in worker processes, encode, commit to SQLite, ANN checkpoint),
  timed from the moment the model is loaded to the end of the run.

Target: pipeline >= 90 % of model-only on 2 cores.

    python benchmarks/index.py [--images 192] [--arch ViT-B-32] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_photo(path: Path, seed: int, size: tuple[int, int] = (1024, 768)) -> None:
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack(
        [(xx * rng.uniform(0.1, 0.3) + yy * rng.uniform(0.05, 0.2) + rng.integers(0, 255)) % 256 for _ in range(3)],
        axis=-1,
    )
    noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(noisy)
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w - 50)), int(rng.integers(0, h - 50))
        x1, y1 = x0 + int(rng.integers(20, 300)), y0 + int(rng.integers(20, 300))
        draw.ellipse((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    img.save(path, quality=88)


class _Clock:
    """Progress sink that notes when the indexing phase starts (after model loading)."""

    def __init__(self) -> None:
        self.started: float | None = None

    def phase(self, name: str, total: int | None) -> None:
        if name == "indexing" and self.started is None:
            self.started = time.perf_counter()

    def advance(self, n: int = 1) -> None:
        pass

    def warn(self, message: str) -> None:
        print("warning:", message, file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", default="1024x768", help="WIDTHxHEIGHT of the generated JPEGs")
    args = ap.parse_args()

    # as in `xmr index`, which sets this before torch loads when it decodes in workers
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import open_clip
    import torch

    from xmr.encoders.clip import ClipEncoder
    from xmr.indexer import IndexOptions, index
    from xmr.settings import Settings

    os.environ.setdefault("XMR_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        folder = tmp_path / "photos"
        folder.mkdir()
        t0 = time.perf_counter()
        files = []
        size = tuple(int(v) for v in args.size.lower().split("x"))
        for i in range(args.images):
            p = folder / f"photo{i:04d}.jpg"
            make_photo(p, i, size)  # type: ignore[arg-type]
            files.append(p)
        print(f"generated {args.images} JPEGs ({args.size}) in {time.perf_counter() - t0:.1f}s")

        torch.manual_seed(0)
        model = open_clip.create_model(args.arch, pretrained=None)
        ckpt = tmp_path / "weights.pt"
        torch.save(model.state_dict(), ckpt)
        del model
        settings = Settings(clip_model=f"{args.arch}:{ckpt}", device=args.device, offline=True)

        enc = ClipEncoder(settings)
        pre = enc.image_preprocessor()
        pixels = np.stack([pre(str(p)) for p in files])
        enc.embed_images(pixels[:8])  # warm-up
        t0 = time.perf_counter()
        enc.embed_images(pixels)
        model_only = args.images / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for p in files[:64]:
            pre(str(p))
        preprocess_rate = 64 / (time.perf_counter() - t0)
        del enc, pixels
        print(f"torch threads: {torch.get_num_threads()}, cores: {os.cpu_count()}")
        print(f"model-only encode ({args.arch}, fp32, {args.device}): {model_only:.1f} images/s")
        print(f"decode+preprocess alone (one process): {preprocess_rate:.1f} images/s")

        clock = _Clock()
        options = IndexOptions(modalities=["image"], workers=args.workers, bridge_concepts=False)
        report = index([folder], index_dir=tmp_path / "index", settings=settings, options=options, progress=clock)
        end = time.perf_counter()
        assert report.embedded_files == args.images, report
        pipeline = args.images / (end - (clock.started or end))
        print(f"pipeline (decode in workers, encode, commit, ANN checkpoint): {pipeline:.1f} images/s")
        print(f"whole run including model load: {report.elapsed_s:.1f}s")
        print(f"pipeline / model-only: {100 * pipeline / model_only:.0f}%")
        # the encoder keeps every core busy, so decoding competes with it for CPU time:
        # the pipeline cannot beat (cores x encode time) / (cores x encode time + decode time)
        cores = torch.get_num_threads()
        enc_cpu, pre_cpu = cores / model_only, 1 / preprocess_rate
        print(f"CPU-time bound on this machine: {100 * enc_cpu / (enc_cpu + pre_cpu):.0f}% of model-only")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
