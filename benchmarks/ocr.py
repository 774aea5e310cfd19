"""OCR: the gate's candidates, word accuracy, and what ``--ocr`` costs ``xmr index``.

Parts (``--parts``, all by default):

- ``gate``: each candidate gate (xmr.ocr.gate.GateConfig variants) on generated text images
  (fixtures/ocr.py, clean and degraded) and photo-like images without text: recall on text
  images, false positives on photos (each costs a full OCR later), and the gate's CPU time per
  image (process time, in-process, images already decoded: what a decode worker adds).
- ``quality``: word accuracy (fixtures.ocr.word_accuracy: ground-truth words recognised,
  case-insensitive, punctuation removed) through xmr.ocr.engine.read on the clean and degraded
  sets, and the chosen gate's recall on them.
- ``cost``: ``--photos`` photo-like JPEGs without text: ``xmr index --ocr auto`` against
  ``--ocr off``, whole processes, in turns, ``--rounds`` each after one untimed run of each;
  medians and their ratio. Each
  timed run adds the photos to a copy of an index made once from one photo, as video.py does
  (the one-time bridge vocabulary embedding is not in the timed runs).
- ``speed``: ``--text`` clean text images indexed with ``--ocr all`` and ``--ocr off``:
  images per second, and OCR's share.
- ``pdf``: a ``--pdf-pages`` scanned PDF (no text layer, 150 dpi greyscale JPEG pages), and
  one a tenth as long, indexed with ``--ocr auto``: wall time and the process tree's peak RSS
  (flat memory: about the same peak for both).

Random-weight CLIP/CLAP checkpoints (benchmarks/_models.py): the index's speed, not its
quality. RapidOCR's PP-OCRv6 weights are real (they ship in its wheel).

    python benchmarks/ocr.py [--parts gate,quality,cost,speed,pdf] [--photos 200] [--text 50]
                             [--rounds 3] [--pdf-pages 300] [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _proc  # noqa: E402
from _models import REPO, clap_checkpoint, clip_checkpoint, xmr_env  # noqa: E402

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fixtures.ocr import PHOTO_KINDS, photo_image, text_sample, word_accuracy, write_scanned_pdf  # noqa: E402

# a full OCR of a photo without text (detector at its default size, nothing to read): what a
# false positive costs; measured by the gate part on a few photos
_FULL_OCR_SAMPLES = 5


def _gate_candidates():
    from xmr.ocr.gate import DEFAULT_CONFIG, GateConfig

    off = GateConfig(exif=True, screen_share=None, min_edge_share=None, min_block_edges=None, det_side=None)
    no_blocks = replace(DEFAULT_CONFIG, min_block_edges=None)
    return [
        ("EXIF screenshot tag only", off),
        ("screenshot colours only (one colour >= 30 %)", replace(off, screen_share=0.3)),
        ("sharp-edge statistics only (>= 0.4 % at 256 px)", replace(off, min_edge_share=0.004)),
        ("edge share and densest block (>= 0.4 %, block >= 20 %)", replace(off, min_edge_share=0.004,
                                                                           min_block_edges=0.2)),
        ("detector 256 px, any region", replace(off, det_side=256, probe=0)),
        ("detector 320 px, any region", replace(off, det_side=320, probe=0)),
        ("detector 384 px, any region", replace(off, det_side=384, probe=0)),
        ("detector 320 px + probe read", replace(off, det_side=320)),
        ("cascade: colours, edges, detector 320 + probe of 1 (no block stage: the previous choice)", no_blocks),
        ("cascade: colours, edges, blocks, detector 256 + probe of 1", replace(DEFAULT_CONFIG, det_side=256, probe=1)),
        ("cascade: colours, edges, blocks, detector 256 + probe of 2", replace(DEFAULT_CONFIG, det_side=256, probe=2)),
        ("cascade: colours, edges, blocks, detector 320 + probe of 1 (chosen)", DEFAULT_CONFIG),
        ("cascade: colours, edges, blocks, detector 320 + probe of 2", replace(DEFAULT_CONFIG, probe=2)),
        ("cascade: colours, edges, blocks, detector 384 + probe of 2", replace(DEFAULT_CONFIG, det_side=384, probe=2)),
    ]


def part_gate(n_text: int, n_photos: int) -> None:
    from xmr.ocr import engine
    from xmr.ocr.gate import models, text_likely

    print(f"\n## gate candidates: {n_text} clean + {n_text} degraded text images, {n_photos} photos without text")
    clean = [text_sample(s).image for s in range(n_text)]
    degraded = [text_sample(s, degraded=True).image for s in range(n_text)]
    photos = [photo_image(s) for s in range(n_photos)]
    kinds = list(PHOTO_KINDS)
    models().rec()  # loaded up front: not part of a per-image cost
    engine.read(photos[0])  # loads the engine
    t = time.process_time()
    for img in photos[:_FULL_OCR_SAMPLES]:
        engine.read(img)
    full_ms = 1000 * (time.process_time() - t) / _FULL_OCR_SAMPLES
    print(f"a full OCR (xmr.ocr.engine.read, default options) of a photo without text: {full_ms:.0f} ms CPU")
    print("\n| candidate | recall clean | recall degraded | false positives (photos) | CPU ms/photo (mean) "
          "| + false positives x full OCR | false positives by kind |")
    print("|---|---|---|---|---|---|---|")
    for name, cfg in _gate_candidates():
        rc = sum(text_likely(img, config=cfg).likely for img in clean) / n_text
        rd = sum(text_likely(img, config=cfg).likely for img in degraded) / n_text
        fp, cost, by_kind = 0, 0.0, {}
        for i, img in enumerate(photos):
            t = time.process_time()
            likely = text_likely(img, config=cfg).likely
            cost += time.process_time() - t
            fp += likely
            if likely:
                by_kind[kinds[i % len(kinds)]] = by_kind.get(kinds[i % len(kinds)], 0) + 1
        per = 1000 * cost / n_photos
        fpr = fp / n_photos
        kinds_s = ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items())) or "-"
        total = per + fpr * full_ms
        print(f"| {name} | {rc:.2f} | {rd:.2f} | {fpr:.3f} ({fp}) | {per:.1f} | {total:.1f} | {kinds_s} |", flush=True)


def part_quality(n_text: int) -> None:
    from xmr.ocr.engine import read
    from xmr.ocr.gate import text_likely

    print(f"\n## word accuracy through xmr.ocr.engine.read (default options), {n_text} images per set")
    for degraded in (False, True):
        hit = total = gated = 0
        cpu = 0.0
        for seed in range(n_text):
            s = text_sample(seed, degraded=degraded)
            t = time.process_time()
            got = [line.text for line in read(s.image).lines]
            cpu += time.process_time() - t
            h, n = word_accuracy(s.words, got)
            hit, total = hit + h, total + n
            gated += text_likely(s.image).likely
        name = "degraded" if degraded else "clean"
        print(f"{name}: word accuracy {hit / total:.3f} ({hit}/{total} words); gate recall {gated / n_text:.2f}; "
              f"OCR {cpu / n_text:.2f} s CPU per image", flush=True)


def _write_photos(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = folder / f"photo-{i:04d}.jpg"
        if not p.exists():
            photo_image(i).save(p, quality=90)
    return folder


def _write_text(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = folder / f"text-{i:04d}.png"
        if not p.exists():
            text_sample(i).image.save(p)
    return folder


class _Runner:
    """Whole ``xmr index`` processes into copies of a seed index (one photo, made once)."""

    def __init__(self, tmp: Path, cache: Path):
        self.tmp = tmp
        clip = clip_checkpoint(cache / "ckpt")
        clap, tok = clap_checkpoint(cache / "ckpt")
        self.env = xmr_env(dict(os.environ), tmp, tok)
        self.env["XMR_MODELS_DIR"] = str(cache / "models")
        self.models = ["--clip-model", f"ViT-B-32:{clip}", "--clap-model", str(clap), "--device", "cpu"]
        seed_dir = cache / "seed"
        seed_dir.mkdir(parents=True, exist_ok=True)
        photo_image(9999, size=(320, 240)).save(seed_dir / "seed.jpg", quality=90)
        self.seed = tmp / "index-seed"
        r = self.run(seed_dir, self.seed, "off")
        if r.returncode:
            raise SystemExit(f"seed index failed: {r.stderr.strip()}")
        print(f"seed index (one photo, new index): {r.wall_s:.1f} s", flush=True)

    def run(self, what: Path, index: Path, ocr: str) -> _proc.ProcRun:
        cmd = [sys.executable, "-m", "xmr", "index", str(what), "--index", str(index), "--quiet", *self.models,
               "--ocr", ocr]
        return _proc.run(cmd, env=self.env)

    def timed(self, what: Path, ocr: str, n: int) -> _proc.ProcRun:
        index = self.tmp / f"index-{ocr}-{n}"
        shutil.rmtree(index, ignore_errors=True)
        shutil.copytree(self.seed, index)
        r = self.run(what, index, ocr)
        if r.returncode:
            raise SystemExit(f"xmr index --ocr {ocr} failed: {r.stderr.strip()}")
        shutil.rmtree(index, ignore_errors=True)
        return r


def part_cost(runner: _Runner, folder: Path, n_photos: int, rounds: int) -> None:
    print(f"\n## --ocr auto vs --ocr off: {n_photos} photo-like JPEGs without text, {rounds} rounds in turns")
    walls: dict[str, list[float]] = {"off": [], "auto": []}
    for mode in ("off", "auto"):  # untimed: first-run costs (OCR models into the page cache ...)
        runner.timed(folder, mode, -1)
    for n in range(rounds):
        for mode in (("off", "auto") if n % 2 == 0 else ("auto", "off")):
            walls[mode].append(runner.timed(folder, mode, n).wall_s)
        print(f"round {n + 1}: off {walls['off'][-1]:.1f} s, auto {walls['auto'][-1]:.1f} s", flush=True)
    off, auto = statistics.median(walls["off"]), statistics.median(walls["auto"])
    print(f"median: off {off:.1f} s ({1000 * off / n_photos:.0f} ms/image), auto {auto:.1f} s; "
          f"auto/off = {auto / off:.3f} ({100 * (auto / off - 1):+.1f} %)")


def part_speed(runner: _Runner, folder: Path, n_text: int) -> None:
    print(f"\n## text images: {n_text} clean text images (PNG), --ocr all vs off")
    r_all = runner.timed(folder, "all", 0)
    r_off = runner.timed(folder, "off", 0)
    peak = _proc.gib(r_all.peak_rss)
    print(f"--ocr all: {r_all.wall_s:.1f} s = {n_text / r_all.wall_s:.2f} images/s (peak RSS {peak}); "
          f"--ocr off: {r_off.wall_s:.1f} s = {n_text / r_off.wall_s:.2f} images/s; "
          f"OCR alone: {(r_all.wall_s - r_off.wall_s) / n_text:.2f} s per image")


def part_pdf(runner: _Runner, cache: Path, pages: int) -> None:
    """The PDF, and one a tenth its length: memory that stays flat has about the same peak."""
    print("\n## scanned PDFs (150 dpi greyscale JPEG pages, no text layer), --ocr auto")
    for n in dict.fromkeys((max(1, pages // 10), pages)):
        folder = cache / f"pdf-{n}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"scanned-{n}.pdf"
        if not path.exists():
            write_scanned_pdf(path.with_suffix(".part"), n)
            path.with_suffix(".part").rename(path)
        r = runner.timed(folder, "auto", 0)
        size = path.stat().st_size / 2**20
        print(f"{n} pages ({size:.1f} MiB): wall {r.wall_s:.1f} s ({r.wall_s / n:.2f} s per page), "
              f"peak RSS {_proc.gib(r.peak_rss)}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--parts", default="gate,quality,cost,speed,pdf")
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--text", type=int, default=50, help="text images per set (clean, degraded)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pdf-pages", type=int, default=300)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "xmr-bench-ocr")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{os.cpu_count()} cores; uptime: {uptime}", flush=True)
    if "gate" in parts:
        part_gate(args.text, args.photos)
    if "quality" in parts:
        part_quality(args.text)
    if parts & {"cost", "speed", "pdf"}:
        with tempfile.TemporaryDirectory(prefix="xmr-ocr-bench-") as tmp:
            runner = _Runner(Path(tmp), args.cache)
            if "cost" in parts:
                part_cost(runner, _write_photos(args.cache / f"photos-{args.photos}", args.photos), args.photos,
                          args.rounds)
            if "speed" in parts:
                part_speed(runner, _write_text(args.cache / f"text-{args.text}", args.text), args.text)
            if "pdf" in parts:
                part_pdf(runner, args.cache, args.pdf_pages)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\nuptime at end: {uptime}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
