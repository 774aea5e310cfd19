"""A first `xmr index` as a new user runs it: whole processes, wall time including model load.

Two scenarios, each into a new, empty index, with random-weight checkpoints
of the default architectures (ViT-B-32, HTSAT-tiny + RoBERTa) passed as files:

* ``notes``: a folder of one-line notes (10,000 by default), each a text file
  of 6-14 words, embedded by both text towers (CLIP and CLAP);
* ``one-image``: a folder holding one 1024x768 JPEG.

Each scenario runs ``--rounds`` times (a new index each time) after one
untimed warm-up run (page cache, xmr's checkpoint-hash cache: files from the
Hugging Face cache need no hashing at all); the median and every run are
printed, with the peak RSS of the process tree.

    python benchmarks/first_index.py [--notes 10000] [--rounds 3] [--only notes|one-image]
        [--precision fp32|bf16|int8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _proc  # noqa: E402
from _models import NOTE_WORDS, clap_checkpoint, clip_checkpoint, xmr_env  # noqa: E402


def make_notes(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        words = rng.choice(NOTE_WORDS, size=int(rng.integers(6, 15)))
        (folder / f"note{i:05d}.txt").write_text(" ".join(words) + "\n", encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--notes", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=("notes", "one-image"), default=None)
    ap.add_argument("--precision", default=None)
    args = ap.parse_args()

    from index import make_photo  # benchmarks/index.py

    with tempfile.TemporaryDirectory(prefix="xmr-first-index-") as tmp_name:
        tmp = Path(tmp_name)
        clip = clip_checkpoint(tmp / "ckpt")
        clap, tok = clap_checkpoint(tmp / "ckpt")
        env = xmr_env(dict(os.environ), tmp, tok)
        scenarios = []
        (tmp / "one-image").mkdir()
        make_photo(tmp / "one-image" / "photo.jpg", 0)
        if args.only in (None, "one-image"):
            scenarios.append(("one-image", tmp / "one-image", "1 JPEG (1024x768)"))
        if args.only in (None, "notes"):
            make_notes(tmp / "notes", args.notes)
            scenarios.append(("notes", tmp / "notes", f"{args.notes} one-line notes"))
        extra = ["--precision", args.precision] if args.precision else []
        print(f"{os.cpu_count()} cores, load average {_proc.load_avg()}, precision {args.precision or 'fp32'}")
        for name, folder, what in scenarios:
            def cmd(n: int, name: str = name, folder: Path = folder) -> list[str]:
                return [sys.executable, "-m", "xmr", "index", str(folder), "--index", str(tmp / f"index-{name}-{n}"),
                        "--quiet", "--clip-model", f"ViT-B-32:{clip}", "--clap-model", str(clap),
                        "--device", "cpu", *extra]

            if name == scenarios[0][0]:  # warm-up on the one-image folder
                warm = _proc.run([*cmd(-1, "warm", tmp / "one-image")], env=env)
                if warm.returncode:
                    print(warm.stderr, file=sys.stderr)
                    return 1
            runs = []
            rounds = args.rounds if name == "one-image" else max(1, min(args.rounds, 2))
            for n in range(rounds):
                r = _proc.run(cmd(n), env=env)
                if r.returncode:
                    print(r.stderr, file=sys.stderr)
                    return 1
                runs.append(r)
                print(f"  {name} run {n + 1}: {r.wall_s:.1f}s, peak RSS {_proc.gib(r.peak_rss)} "
                      f"(load {_proc.load_avg()})", flush=True)
            med = _proc.median([r.wall_s for r in runs])
            peak = _proc.gib(max(r.peak_rss for r in runs))
            print(f"first index of {what}: median {med:.1f} s over {len(runs)} runs "
                  f"({', '.join(f'{r.wall_s:.1f}' for r in runs)}), peak RSS {peak}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
