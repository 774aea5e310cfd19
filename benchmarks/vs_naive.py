"""`xmr index` against the naive open_clip loop, as whole processes, in turns.

The naive loop is what a user writes from open_clip's README: load the model
with ``create_model_and_transforms``, then ``preprocess(Image.open(p))`` per
image, batches of 32, ``encode_image``, normalise, keep the vectors (saved to
a .npy file at the end). ``xmr index`` indexes the same folder into a new,
empty index (walk, hash, classify, decode in workers, encode, SQLite commit,
ANN checkpoint) with the same random-weight ViT-B-32 checkpoint file.

Each round runs the naive loop, ``xmr index`` (fp32, the default),
``xmr index --precision int8`` and ``xmr index`` with ``XMR_INDEX_ENGINE=torch``
(images through the torch backend, as every run did before the image tower
was used for indexing) one after the other, in a rotating order, so machine
load affects all alike; medians over the rounds are reported, with the ratio
naive / xmr (above 1: xmr is faster) and the peak RSS of each process tree
(decoder workers included).

One untimed warm-up run of each fills the page cache and xmr's
checkpoint-hash cache (files from the Hugging Face cache need no hashing at
all). It is also xmr's first run with this checkpoint: the fp32 warm-up
exports CLIP's image tower to ONNX (as any first run with 64 images or more
does, once per checkpoint) and the int8 warm-up derives its int8 variant, so
the timed runs are the second and later runs a user sees. The warm-up walls
are printed too: they are what a user's very first run costs.

    python benchmarks/vs_naive.py [--images 192] [--rounds 3] [--size 1024x768]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _proc  # noqa: E402
from _models import clap_checkpoint, clip_checkpoint, xmr_env  # noqa: E402

NAIVE = textwrap.dedent(
    """
    import sys, glob
    import numpy as np, torch, open_clip
    from PIL import Image

    folder, ckpt, out = sys.argv[1:4]
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=ckpt)
    model.eval()
    paths = sorted(glob.glob(folder + "/*.jpg"))
    feats = []
    with torch.no_grad():
        for i in range(0, len(paths), 32):
            batch = torch.stack([preprocess(Image.open(p)) for p in paths[i : i + 32]])
            f = model.encode_image(batch)
            feats.append((f / f.norm(dim=-1, keepdim=True)).numpy())
    np.save(out, np.concatenate(feats))
    """
)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="1024x768", help="WIDTHxHEIGHT of the generated JPEGs")
    args = ap.parse_args()

    from index import make_photo  # benchmarks/index.py

    with tempfile.TemporaryDirectory(prefix="xmr-vs-naive-") as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "photos"
        folder.mkdir()
        size = tuple(int(v) for v in args.size.lower().split("x"))
        for i in range(args.images):
            make_photo(folder / f"photo{i:04d}.jpg", i, size)  # type: ignore[arg-type]
        clip = clip_checkpoint(tmp / "ckpt")
        clap, tok = clap_checkpoint(tmp / "ckpt")
        env = xmr_env(dict(os.environ), tmp, tok)
        naive_py = tmp / "naive.py"
        naive_py.write_text(NAIVE)

        def cmd(mode: str, n: int) -> list[str]:
            if mode == "naive":
                return [sys.executable, str(naive_py), str(folder), str(clip), str(tmp / "naive.npy")]
            extra = ["--precision", "int8"] if mode == "int8" else []
            index = tmp / f"index-{mode}-{n}"
            return [sys.executable, "-m", "xmr", "index", str(folder), "--index", str(index), "--quiet",
                    "--clip-model", f"ViT-B-32:{clip}", "--clap-model", str(clap), "--device", "cpu", *extra]

        torch_env = {**env, "XMR_INDEX_ENGINE": "torch"}

        def env_of(mode: str) -> dict[str, str]:
            return torch_env if mode == "torch" else env

        modes = ["naive", "fp32", "int8", "torch"]
        print(f"{args.images} JPEGs {args.size}, {os.cpu_count()} cores, load average {_proc.load_avg()}", flush=True)
        for mode in modes:  # warm-up: page cache, checkpoint hash cache, xmr's first run (tower export)
            r = _proc.run(cmd(mode, -1), env=env_of(mode))
            if r.returncode:
                print(f"{mode} failed:\n{r.stderr}", file=sys.stderr)
                return 1
            print(f"warm-up {mode}: {r.wall_s:.1f}s, peak RSS {_proc.gib(r.peak_rss)}", flush=True)
        walls: dict[str, list[float]] = {m: [] for m in modes}
        peaks: dict[str, list[int]] = {m: [] for m in modes}
        for n in range(args.rounds):
            order = modes[n % len(modes) :] + modes[: n % len(modes)]
            for mode in order:
                r = _proc.run(cmd(mode, n), env=env_of(mode))
                assert r.returncode == 0, r.stderr
                walls[mode].append(r.wall_s)
                peaks[mode].append(r.peak_rss)
            print(f"round {n + 1}: " + ", ".join(f"{m} {walls[m][-1]:.1f}s" for m in modes)
                  + f"  (load {_proc.load_avg()})", flush=True)
        naive = _proc.median(walls["naive"])
        print("\n| mode | wall (median) | images/s | vs naive loop | peak RSS (max) |")
        print("|---|---|---|---|---|")
        for mode, label in (("naive", "naive open_clip loop"), ("fp32", "`xmr index` (fp32)"),
                            ("int8", "`xmr index --precision int8`"),
                            ("torch", "`xmr index`, `XMR_INDEX_ENGINE=torch`")):
            w = _proc.median(walls[mode])
            ratio = "1.00x (baseline)" if mode == "naive" else f"{naive / w:.2f}x"
            print(f"| {label} | {w:.1f} s | {args.images / w:.1f} | {ratio} | {_proc.gib(max(peaks[mode]))} |")
        print(f"\nruns per mode: {args.rounds}; all walls: "
              + "; ".join(f"{m} " + "/".join(f"{w:.1f}" for w in walls[m]) for m in modes))
        print(f"load average at end: {_proc.load_avg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
