"""Throughput of the two encoders, model-only and along the full path from a file.

Both backends are built with random weights of the *default* architectures
(speed does not depend on the weights) and loaded through the same options a
user gives, so model loading, preprocessing and batching are xmr's own:

* ``clip``: OpenCLIP ViT-B-32 from ``open_clip.create_model("ViT-B-32",
  pretrained=None)``, saved as a state dict and loaded as
  ``--clip-model ViT-B-32:/tmp/.../w.pt``;
* ``clap``: LAION-CLAP HTS-AT tiny + RoBERTa-base, a random checkpoint in the
  published format (``tests/clap_helpers.make_checkpoint``) and a synthetic
  50,265-entry RoBERTa tokenizer (``XMR_CLAP_TOKENIZER``).

Measured per backend, on the chosen device, at the encoder's own precision
(fp32 on CPU and MPS, fp16 on CUDA) and default batch size (``--batch-size``
overrides it); each rate is the fastest of ``--repeat`` timed runs (default 2,
the one least disturbed by other load), after one untimed warm-up batch:

* CLIP images/s, model-only: ``embed_images`` on pixels already preprocessed;
* CLIP images/s, full: decode a 1024x768 JPEG from disk, preprocess
  (``image_preprocessor()``) and encode, all in this one process -- plus the
  decode + preprocess rate alone;
* CLIP texts/s: ``embed_texts`` on short captions and on passages from
  ``split_text`` (up to 75 tokens + start/end = the 77-token context);
* CLAP windows/s, model-only: ``embed_audio`` on 10 s windows in memory;
* CLAP windows/s, full: ``load_audio`` on 30 s 44.1 kHz stereo FLAC, Ogg
  Vorbis, WAV and MP3 files (decode, downmix, resample to 48 kHz), then
  ``windows`` and ``embed_audio`` -- plus decode + resample + windowing alone.
  Such a file makes 4 windows, not 3: librosa's length rule (which
  ``load_audio`` copies) rounds 30 s to 1,440,001 samples at 48 kHz, so an
  end-aligned 4th window follows; rates count the windows actually embedded;
* CLAP texts/s: ``embed_texts`` on short captions and on ``split_text`` passages
  (token counts are the synthetic tokenizer's; laion-clap pads every text to 77);
* the model load time (``ClipEncoder(settings)`` / ``ClapEncoder(settings)``,
  which includes hashing the checkpoint once), the device, torch version,
  torch threads, cores and the load average before and after.

Run (about 2-4 minutes on 2 idle cores)::

    python benchmarks/encoders.py [--images 64] [--windows 24] [--texts 256]
        [--device auto|cpu|cuda|mps] [--batch-size N] [--only clip|clap] [--repeat 2]

Everything is written to a temporary directory (models dir, checkpoints,
media) and removed afterwards; nothing touches the network.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO / "tests", REPO):  # fixtures (repo root) and clap_helpers (tests/)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

CLIP_ARCH = "ViT-B-32"
CLAP_AMODEL = "HTSAT-tiny"
PHOTO_SIZE = (1024, 768)
AUDIO_SECONDS = 30.0
AUDIO_SR = 44100
AUDIO_FORMATS = (  # (extension, soundfile subtype)
    (".flac", "PCM_16"),
    (".ogg", "VORBIS"),
    (".wav", "PCM_16"),
    (".mp3", "MPEG_LAYER_III"),
)
_ADJ = "small large red blue old young quiet loud wet bright dark wooden".split()
_NOUN = "dog cat bird car boat piano guitar train child woman man house tree bell".split()
_PLACE = "beach street forest kitchen harbour garden station field river stage".split()


# --------------------------------------------------------------------------- helpers


def load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def best(fn: Callable[[], Any], repeat: int) -> tuple[Any, list[float]]:
    """Run ``fn`` ``repeat`` times; its last result and every run's seconds."""
    times = []
    out = None
    for _ in range(repeat):
        out, secs = timed(fn)
        times.append(secs)
    return out, times


def line(label: str, n: int, unit: str, times: list[float], extra: str = "") -> float:
    """Print the rate of the fastest run (the least disturbed by other load); return its seconds."""
    secs = min(times)
    runs = f"best of {len(times)}: " + "/".join(f"{t:.2f}" for t in times) + "s" if len(times) > 1 else f"{secs:.2f}s"
    note = f"  {extra}" if extra else ""
    print(f"  {label:<44} {rate(n, secs):8.1f} {unit}/s  ({n} in {runs}){note}", flush=True)
    return secs


class BatchSizes:
    """Notes the batch size ``ClapEncoder`` picks on each embed call (it has no
    attribute for its defaults, which differ for audio and text): wraps the
    encoder's batching generator and reads the size of its first batch."""

    def __init__(self, enc: Any) -> None:
        self.seen: list[int] = []
        inner = enc._batches

        def wrapper(n: int, *args: Any) -> Any:
            a, b = next(iter(inner(1 << 30, *args)))
            self.seen.append(b - a)
            return inner(n, *args)

        enc._batches = wrapper

    def last(self) -> int:
        return self.seen[-1]


def captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)

    def pick(words: list[str]) -> str:
        return words[int(rng.integers(len(words)))]

    return [f"a photo of a {pick(_ADJ)} {pick(_NOUN)} near the {pick(_PLACE)}" for _ in range(n)]


def passages(split: Callable[[str], list[Any]], n: int) -> list[str]:
    """``n`` passages as the encoder's own splitter cuts long documents (full-length ones only)."""
    from fixtures.make_fixtures import random_text

    out: list[str] = []
    seed = 0
    while len(out) < n:
        parts = [p.text for p in split(random_text(seed, words=600))]
        out.extend(parts[:-1] or parts)  # the last passage of a document is usually short
        seed += 1
    return out[:n]


def text_workload(enc: Any, n: int) -> list[tuple[str, list[str], float]]:
    """Short captions and full-length passages, with their mean token count
    (special tokens excluded), built before the encoder embeds any text."""
    out = []
    for label, texts in (("short captions", captions(n)), ("passages", passages(enc.split_text, n))):
        out.append((label, texts, float(np.mean([enc.count_tokens(t) for t in texts]))))
    return out


def device_note(device: Any) -> str:
    import torch

    if getattr(device, "type", "") == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def sync(device: Any) -> None:
    import torch

    if getattr(device, "type", "") == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- media


def make_photos(folder: Path, n: int) -> list[Path]:
    """Photo-like JPEGs: a fixture scene upscaled, with sensor-like noise (so the
    entropy decoder has real work), quality 88."""
    from PIL import Image

    from fixtures.make_fixtures import draw_scene

    folder.mkdir(parents=True, exist_ok=True)
    w, h = PHOTO_SIZE
    out = []
    for i in range(n):
        base = np.asarray(draw_scene(i, (w // 4, h // 4)).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
        noisy = base + np.random.default_rng(i).normal(0.0, 10.0, base.shape)
        path = folder / f"photo{i:04d}.jpg"
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=88)
        out.append(path)
    return out


def make_audio_files(folder: Path, n: int) -> list[Path]:
    """``n`` 30 s stereo files at 44.1 kHz, cycling through FLAC, Ogg Vorbis, WAV and MP3."""
    from fixtures.make_fixtures import noise, speechlike, tone, write_audio

    folder.mkdir(parents=True, exist_ok=True)
    voice = [speechlike(AUDIO_SECONDS, AUDIO_SR, seed=s, pitch=p) for s, p in ((0, 120.0), (1, 210.0))]
    out = []
    for i in range(n):
        ext, subtype = AUDIO_FORMATS[i % len(AUDIO_FORMATS)]
        chord = tone(AUDIO_SECONDS, AUDIO_SR, freqs=(220.0 * (1 + 0.1 * i), 330.0), channels=2)
        hiss = noise(AUDIO_SECONDS, AUDIO_SR, seed=i)
        shift = int(i * 0.37 * AUDIO_SR)
        left = 0.5 * np.roll(voice[0], shift) + 0.3 * chord[:, 0] + 0.2 * hiss
        right = 0.5 * np.roll(voice[1], shift) + 0.3 * chord[:, 1] + 0.2 * np.roll(hiss, 4410)
        data = np.stack([left, right], axis=1).astype(np.float32)
        out.append(write_audio(folder / f"clip{i:03d}{ext}", data, AUDIO_SR, subtype=subtype))
    return out


# --------------------------------------------------------------------------- clip


def bench_clip(args: argparse.Namespace, tmp: Path) -> None:
    import open_clip
    import torch

    from xmr.encoders.clip import ClipEncoder
    from xmr.settings import Settings

    print(f"\n== clip: OpenCLIP {CLIP_ARCH}, random weights", flush=True)
    print(f"  load average at start: {load_avg()}")
    photos, secs = timed(lambda: make_photos(tmp / "photos", args.images))
    print(f"  generated {len(photos)} JPEGs ({PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}) in {secs:.1f}s")

    def write_checkpoint() -> Path:
        torch.manual_seed(0)
        logging.disable(logging.WARNING)  # open_clip: "No pretrained weights loaded ..."
        try:
            model = open_clip.create_model(CLIP_ARCH, pretrained=None)
        finally:
            logging.disable(logging.NOTSET)
        path = tmp / "clip" / "w.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
        return path

    ckpt, secs = timed(write_checkpoint)
    print(f"  checkpoint written in {secs:.1f}s ({ckpt.stat().st_size / 2**20:.0f} MiB)")
    settings = Settings(clip_model=f"{CLIP_ARCH}:{ckpt}", device=args.device, batch_size=args.batch_size,
                        offline=True, precision=args.precision)
    enc, secs = timed(lambda: ClipEncoder(settings))
    device = enc._device
    precision = enc.precision
    default = "" if args.batch_size else " (encoder default)"
    print(f"  model load: {secs:.2f}s  [ClipEncoder(settings), incl. hashing the checkpoint]")
    print(f"  device {device_note(device)}, {precision}, batch size {enc.batch_size}{default}")
    bs = enc.batch_size
    pre = enc.image_preprocessor()
    text_sets = text_workload(enc, args.texts)

    # decode + preprocess alone (also yields the pixels for the model-only rate)
    pre(str(photos[0]))
    pixels, t_pre = best(lambda: np.stack([pre(str(p)) for p in photos]), args.repeat)
    line("decode JPEG + preprocess (no model)", len(photos), "images", t_pre)

    # model-only
    enc.embed_images(pixels[:bs])  # warm-up, one full batch
    sync(device)
    emb, times = best(lambda: enc.embed_images(pixels), args.repeat)
    assert emb.shape == (len(photos), enc.dim)
    t_model = line("images, model-only (embed_images)", len(photos), "images", times)

    # full: decode + preprocess + encode, batch by batch, one process
    def full() -> int:
        done = 0
        for i in range(0, len(photos), bs):
            batch = np.stack([pre(str(p)) for p in photos[i : i + bs]])
            done += len(enc.embed_images(batch))
        return done

    n, times = best(full, args.repeat)
    t_full = min(times)
    line("images, full (decode+preprocess+encode)", n, "images", times,
         f"= {100 * t_model / t_full:.0f}% of model-only")

    # texts: batches cut to their longest text, and the 77-token padded path they replace
    def padded(texts: list[str]) -> int:
        with torch.inference_mode():
            for i in range(0, len(texts), bs):
                enc._model.encode_text(enc._tokenizer(texts[i : i + bs]))
        return len(texts)

    for label, texts, tokens in text_sets:
        enc.embed_texts(texts[:bs])  # warm-up
        out, times = best(lambda texts=texts: enc.embed_texts(texts), args.repeat)
        assert out.shape == (len(texts), enc.dim)
        t_dyn = line(f"texts, {label} (mean {tokens:.0f} tokens)", len(texts), "texts", times)
        _, times = best(lambda texts=texts: padded(texts), args.repeat)
        t_pad = line("  the same, every text padded to 77 tokens", len(texts), "texts", times)
        print(f"  {'':<44} length-sorted batches: {t_pad / t_dyn:.2f}x the padded rate")
    print(f"  load average at end: {load_avg()}", flush=True)


# --------------------------------------------------------------------------- clap


def bench_clap(args: argparse.Namespace, tmp: Path) -> None:
    from _models import roberta_tokenizer
    from clap_helpers import make_checkpoint

    from xmr.encoders.clap import ClapEncoder
    from xmr.preprocess.audio import SAMPLE_RATE, load_audio, window_count, windows
    from xmr.settings import Settings

    print(f"\n== clap: LAION-CLAP {CLAP_AMODEL} + RoBERTa-base, random weights", flush=True)
    print(f"  load average at start: {load_avg()}")
    # windows per file as load_audio + windows make them: librosa's length rule
    # ceil(n * 48000 / sr) in floating point gives 1,440,001 samples for 30 s at
    # 44.1 kHz, so such a file has an end-aligned 4th window
    n_48k = int(np.ceil(round(AUDIO_SECONDS * AUDIO_SR) * (float(SAMPLE_RATE) / AUDIO_SR)))
    per_file = window_count(n_48k)
    n_files = max(1, math.ceil(args.windows / per_file))
    files, secs = timed(lambda: make_audio_files(tmp / "audio", n_files))
    kinds = ", ".join(sorted({p.suffix[1:].upper() for p in files}))
    print(f"  generated {len(files)} audio files ({AUDIO_SECONDS:.0f} s, {AUDIO_SR} Hz stereo; {kinds}; "
          f"{per_file} windows each at 48 kHz: {n_48k} samples) in {secs:.1f}s")

    os.environ["XMR_CLAP_TOKENIZER"] = str(roberta_tokenizer(tmp / "roberta"))
    ckpt = tmp / "clap" / "clap-htsat-tiny.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    _, secs = timed(lambda: make_checkpoint(ckpt, amodel=CLAP_AMODEL, seed=0))
    print(f"  checkpoint written in {secs:.1f}s ({ckpt.stat().st_size / 2**20:.0f} MiB)")
    settings = Settings(clap_model=str(ckpt), device=args.device, batch_size=args.batch_size, offline=True,
                        precision=args.precision)
    enc, secs = timed(lambda: ClapEncoder(settings))
    device = enc.device
    precision = enc.precision
    print(f"  model load: {secs:.2f}s  [ClapEncoder(settings), incl. hashing the checkpoint]")
    sizes = BatchSizes(enc)
    text_sets = text_workload(enc, args.texts)

    # decode + resample + windowing alone (also yields the windows for the model-only rate)
    def decode() -> np.ndarray:
        return np.stack([w.samples for p in files for w in windows(load_audio(p))])

    decode()  # warm-up (soxr, libsndfile codecs)
    wins, t_dec = best(decode, args.repeat)
    n_win = len(wins)
    assert n_win == n_files * per_file, (n_win, n_files, per_file)
    line("decode + resample + windows (no model)", n_win, "windows", t_dec,
         f"= {rate(len(files) * AUDIO_SECONDS, min(t_dec)):.0f} s of audio/s")

    # the encoder's batch sizes, from one tiny call each
    enc.embed_audio(wins[:1])
    bs_audio = sizes.last()
    enc.embed_texts(["warm-up"])
    bs_text = sizes.last()
    default = "" if args.batch_size else " (encoder default)"
    print(f"  device {device_note(device)}, {precision}, batch size {bs_audio} windows / {bs_text} texts{default}")

    # model-only
    enc.embed_audio(wins[:bs_audio])  # warm-up, one full batch
    sync(device)
    emb, times = best(lambda: enc.embed_audio(wins), args.repeat)
    assert emb.shape == (n_win, enc.dim)
    t_model = line("windows, model-only (embed_audio, 10 s)", n_win, "windows", times,
                   f"= {rate(n_win * 10.0, min(times)):.0f}x realtime")

    # full: file -> load_audio -> windows -> embed in the encoder's batches, one process
    def full() -> int:
        pending: list[np.ndarray] = []
        done = 0
        for p in files:
            pending.extend(w.samples for w in windows(load_audio(p)))
            while len(pending) >= bs_audio:
                done += len(enc.embed_audio(np.stack(pending[:bs_audio])))
                del pending[:bs_audio]
        if pending:
            done += len(enc.embed_audio(np.stack(pending)))
        return done

    n, times = best(full, args.repeat)
    t_full = min(times)
    line("windows, full (decode+resample+encode)", n, "windows", times,
         f"= {rate(len(files) * AUDIO_SECONDS, t_full):.1f} s of audio/s, {100 * t_model / t_full:.0f}% of model-only")

    # texts: padded to each batch's longest, and laion-clap's pad-to-77 path they replace
    import torch

    def padded(texts: list[str]) -> int:
        with torch.inference_mode():
            for i in range(0, len(texts), bs_text):
                tok = enc._tokenizer(texts[i : i + bs_text], padding="max_length", truncation=True, max_length=77,
                                     return_tensors="pt")
                enc.model.encode_text(dict(tok), device=enc.device)
        return len(texts)

    for label, texts, tokens in text_sets:
        enc.embed_texts(texts[:bs_text])  # warm-up
        out, times = best(lambda texts=texts: enc.embed_texts(texts), args.repeat)
        assert out.shape == (len(texts), enc.dim)
        t_dyn = line(f"texts, {label} (mean {tokens:.0f} tokens)", len(texts), "texts", times)
        _, times = best(lambda texts=texts: padded(texts), args.repeat)
        t_pad = line("  the same, every text padded to 77 tokens", len(texts), "texts", times)
        print(f"  {'':<44} length-sorted batches: {t_pad / t_dyn:.2f}x the padded rate")
    print(f"  load average at end: {load_avg()}", flush=True)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--images", type=int, default=64, help="JPEGs for the CLIP image rates (default 64)")
    ap.add_argument("--windows", type=int, default=24,
                    help="10 s audio windows for the CLAP rates, rounded up to whole 30 s files (default 24)")
    ap.add_argument("--texts", type=int, default=256, help="texts per text rate (default 256)")
    ap.add_argument("--device", default="auto", help="auto|cpu|cuda[:N]|mps (default auto)")
    ap.add_argument("--batch-size", type=int, default=None, help="override the encoders' default batch size")
    ap.add_argument("--only", choices=("clip", "clap"), default=None, help="run one backend only")
    ap.add_argument("--precision", choices=("fp32", "bf16", "int8"), default=None,
                    help="encoder precision on CPU (default fp32; CUDA runs fp16)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="timed runs per measurement; the fastest is reported (default 2)")
    args = ap.parse_args(argv)
    for name in ("images", "windows", "texts", "repeat"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        ap.error("--batch-size must be at least 1")

    with tempfile.TemporaryDirectory(prefix="xmr-bench-enc-") as tmp_name:
        tmp = Path(tmp_name)
        # keep the checkpoint-hash cache and anything else xmr writes out of the user's dirs
        os.environ["XMR_MODELS_DIR"] = str(tmp / "models")
        os.environ["XMR_HOME"] = str(tmp / "home")
        os.environ["XMR_OFFLINE"] = "1"
        os.environ["HF_HUB_OFFLINE"] = "1"

        import torch

        from xmr.encoders.device import resolve_device

        cores = os.cpu_count()
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
        print("xmr encoder benchmark (random weights of the default architectures)")
        print(f"device: {device_note(resolve_device(args.device))} (--device {args.device})")
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cores {cores} ({usable} usable), "
              f"python {platform.python_version()}, {platform.machine()}")
        print(f"load average (1/5/15 min) at start: {load_avg()}", flush=True)
        t0 = time.perf_counter()
        if args.only in (None, "clip"):
            bench_clip(args, tmp)
        if args.only in (None, "clap"):
            bench_clap(args, tmp)
        print(f"\ntotal {time.perf_counter() - t0:.0f}s; load average at end: {load_avg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
