"""`xmr index` on videos: realtime factor and peak RSS, fp32 and int8.

Generates camera-like 1080p30 H.264 + AAC clips (a textured scene panned slowly, a cut to
another scene every 12 s, a keyframe every 2 s as phones write them, a soundtrack of
noise and tones) and indexes them with the random-weight ViT-B-32 / HTSAT-tiny
checkpoints (benchmarks/_models.py) as whole processes. Per precision, an untimed run makes a
new index from a 2 s seed clip (the first run ever also exports CLIP's image tower to ONNX,
kept in the cache folder; every new index embeds the 1,007-word bridge vocabulary in both
spaces once), then ``--rounds`` timed runs add the clips to a copy of that index, as a
user's later runs do. The realtime factor is the seconds of video indexed per second of
wall time; peak RSS is the process tree's (decode workers included). When the ONNX int8
image tower is refused, int8 is measured through the torch engine (``int8-torch``).

    python benchmarks/video.py [--videos 5] [--seconds 60] [--rounds 1] [--precisions fp32,int8] [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _proc  # noqa: E402
from _models import clap_checkpoint, clip_checkpoint, xmr_env  # noqa: E402


def make_clip(path: Path, *, seconds: float, seed: int, size: tuple[int, int] = (1920, 1080), fps: int = 30) -> None:
    """A camera-like clip, built in YUV so that generating it costs little besides x264."""
    import av
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    planes = []
    for _ in range(5):  # the scenes: block textures twice the frame size, panned across
        small = rng.integers(0, 256, ((2 * h) // 40 + 1, (2 * w) // 40 + 1, 3), dtype=np.uint8)
        rgb = Image.fromarray(small).resize(((2 * w) // 40 * 40 + 40, (2 * h) // 40 * 40 + 40), Image.BILINEAR)
        y, u, v = (np.asarray(c) for c in rgb.convert("YCbCr").split())
        planes.append((y, u[::2, ::2], v[::2, ::2]))
    with av.open(str(path), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast", "g": str(2 * fps), "crf": "26"}
        a = out.add_stream("aac", rate=48_000)
        a.layout = "mono"
        cut = 12 * fps
        for i in range(int(seconds * fps)):
            y, u, v = planes[(i // cut) % len(planes)]
            k = i % cut
            x0, y0 = (4 * k) % w // 2 * 2, (2 * k) % h // 2 * 2  # a slow pan
            buf = np.concatenate(
                [
                    y[y0 : y0 + h, x0 : x0 + w].ravel(),
                    u[y0 // 2 : y0 // 2 + h // 2, x0 // 2 : x0 // 2 + w // 2].ravel(),
                    v[y0 // 2 : y0 // 2 + h // 2, x0 // 2 : x0 // 2 + w // 2].ravel(),
                ]
            ).reshape(h * 3 // 2, w)
            frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        t = np.arange(int(seconds * 48_000)) / 48_000
        sig = (0.05 * rng.standard_normal(len(t)) + 0.2 * np.sin(2 * np.pi * (220 + 40 * (t // 5)) * t)).astype("f4")
        n = a.codec_context.frame_size or 1024
        for s in range(0, len(sig), n):
            fr = av.AudioFrame.from_ndarray(sig[None, s : s + n].copy(), format="fltp", layout="mono")
            fr.sample_rate, fr.pts, fr.time_base = 48_000, s, Fraction(1, 48_000)
            out.mux(a.encode(fr))
        out.mux(a.encode(None))


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--videos", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--precisions", default="fp32,int8", help="comma-separated: fp32, int8")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "xmr-bench-video")
    args = ap.parse_args()

    folder = args.cache / f"clips-{args.videos}x{args.seconds:g}s"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(args.videos):
        p = folder / f"clip{i:02d}.mp4"
        if not p.exists():
            make_clip(p.with_suffix(".part"), seconds=args.seconds, seed=i)
            p.with_suffix(".part").rename(p)
    total_s = args.videos * args.seconds
    with tempfile.TemporaryDirectory(prefix="xmr-video-bench-") as tmp_name:
        tmp = Path(tmp_name)
        clip = clip_checkpoint(args.cache / "ckpt")
        clap, tok = clap_checkpoint(args.cache / "ckpt")
        env = xmr_env(dict(os.environ), tmp, tok)
        # the tower exports (fp32 ONNX, its int8 variant) are kept with the clips: made once
        env["XMR_MODELS_DIR"] = str(args.cache / "models")

        seed_folder = args.cache / "seed"
        if not (seed_folder / "seed.mp4").exists():
            seed_folder.mkdir(parents=True, exist_ok=True)
            make_clip(seed_folder / "seed.mp4", seconds=2.0, seed=99, size=(320, 240))

        def cmd(mode: str, n: int, what: Path = folder) -> list[str]:
            extra = ["--precision", "int8"] if mode.startswith("int8") else []
            return [sys.executable, "-m", "xmr", "index", str(what), "--index", str(tmp / f"index-{mode}-{n}"),
                    "--quiet", "--clip-model", f"ViT-B-32:{clip}", "--clap-model", str(clap), "--device", "cpu",
                    *extra]

        def seeded(mode: str, n: int) -> None:
            # the timed runs add the clips to an index that already exists: the one-time cost of a new
            # index (embedding the 1,007-word bridge vocabulary in both spaces) is the seed run's
            shutil.copytree(tmp / f"index-{mode}--1", tmp / f"index-{mode}-{n}")

        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(f"{args.videos} x {args.seconds:g} s 1080p30 H.264+AAC, {os.cpu_count()} cores; uptime: {uptime}")
        # int8-torch: images through torch's dynamic int8 layers (XMR_INDEX_ENGINE=torch), measured
        # when the ONNX int8 image tower is refused (its probe check against fp32)
        envs = {"fp32": env, "int8": env, "int8-torch": {**env, "XMR_INDEX_ENGINE": "torch"}}
        modes = []
        wanted = set(args.precisions.split(","))
        for mode in ("fp32", "int8", "int8-torch"):
            if mode.split("-")[0] not in wanted or (mode == "int8-torch" and "int8" in modes):
                continue
            for clip_file in sorted(folder.glob("*.mp4")):  # into the page cache
                clip_file.read_bytes()
            r = _proc.run(cmd(mode, -1, seed_folder), env=envs[mode])
            if r.returncode:
                print(f"{mode} failed: {r.stderr.strip()}", flush=True)
                continue
            modes.append(mode)
            print(f"new index ({mode}, a 2 s seed clip): {r.wall_s:.1f}s, peak RSS {_proc.gib(r.peak_rss)}", flush=True)
        walls: dict[str, list[float]] = {m: [] for m in modes}
        cpus: dict[str, list[float]] = {m: [] for m in modes}
        peaks: dict[str, list[int]] = {m: [] for m in modes}
        for n in range(args.rounds):
            for mode in modes[n % len(modes) :] + modes[: n % len(modes)]:
                seeded(mode, n)
                r = _proc.run(cmd(mode, n), env=envs[mode])
                assert r.returncode == 0, r.stderr
                walls[mode].append(r.wall_s)
                cpus[mode].append(r.cpu_s)
                peaks[mode].append(r.peak_rss)
            print(
                f"round {n + 1}: " + ", ".join(f"{m} {walls[m][-1]:.1f}s ({cpus[m][-1]:.1f} s CPU)" for m in modes),
                flush=True,
            )
        print("\n| precision | wall (median) | realtime factor | peak RSS (max) |")
        print("|---|---|---|---|")
        for mode in modes:
            w = _proc.median(walls[mode])
            print(f"| {mode} | {w:.1f} s | {total_s / w:.1f}x | {_proc.gib(max(peaks[mode]))} |")
        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(f"\nuptime at end: {uptime}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
