"""Test encoders for ``xmr eval`` whose vectors encode a label read from the file's content.

Never used by the product; selected like tests/fake_encoders.py through
XMR_BACKEND_CLIP=eval_encoders:LabelClip and XMR_BACKEND_CLAP=eval_encoders:LabelClap.

Each generated file carries its label's code in its *content*, never its path:

- image: the red channel is filled with ``RED[code]`` (lossless PNG); green and
  blue are per-file noise, so every file has its own content;
- audio: a sine at ``FREQ[code]`` Hz (whole cycles per second) plus per-file noise;
- text: the label word appears among neutral filler words; a label-text query
  is the word itself.

The encoder recovers the code from what it is given (pixels, 48 kHz samples,
text) and returns ``unit(e[code] + NOISE * n)``, where ``e[code]`` is a basis
vector and ``n`` a standard Gaussian vector seeded by the content, scaled by
1/sqrt(DIM) so NOISE is the noise-to-signal norm ratio. ``EVAL_ENCODER_NOISE``
sets NOISE (default 0: a perfect encoder). Content without a code gets a
random unit vector.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import fake_encoders
import numpy as np
import soundfile as sf
from PIL import Image

LABELS = ("amber", "basalt", "cedar", "dune", "ember", "fjord")
DIM = 32
RED = tuple(20 + 35 * i for i in range(len(LABELS)))
FREQ = tuple(300 + 150 * i for i in range(len(LABELS)))
FILLER = "the of and with quietly across seven paper window under morning long road".split()


def _noise_level() -> float:
    return float(os.environ.get("EVAL_ENCODER_NOISE", "0") or 0)


def _vector(code: int | None, content: bytes) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(content, digest_size=8).digest(), "little")
    n = np.random.default_rng(seed).standard_normal(DIM) / np.sqrt(DIM)
    if code is None:
        v = n
    else:
        v = np.zeros(DIM)
        v[code] = 1.0
        v += _noise_level() * n
    return (v / np.linalg.norm(v)).astype(np.float32)


def _nearest(value: float, table: tuple[int, ...]) -> int:
    return int(np.argmin([abs(value - t) for t in table]))


@dataclass(frozen=True)
class LabelImagePre:
    size: int = 8

    def __call__(self, path: str) -> np.ndarray:
        from xmr.preprocess.image import load_image

        img = load_image(path).resize((self.size, self.size))
        return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0


def _text_code(text: str) -> int | None:
    for word in text.lower().split():
        if word.strip(".,") in LABELS:
            return LABELS.index(word.strip(".,"))
    return None


class _LabelEncoder(fake_encoders._Fake):
    dim = DIM

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, DIM), np.float32)
        return np.stack([_vector(_text_code(t), f"{self.space}:{t}".encode()) for t in texts])


class LabelClip(_LabelEncoder):
    space = "clip"
    modalities = frozenset({"image", "text"})

    def image_preprocessor(self) -> LabelImagePre:
        return LabelImagePre()

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        out = []
        for p in pixels:
            code = _nearest(float(p[0].mean()) * 255.0, RED)
            out.append(_vector(code, np.round(p * 255).astype(np.uint8).tobytes()))
        return np.stack(out)


class LabelClap(_LabelEncoder):
    space = "clap"
    modalities = frozenset({"audio", "text"})

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        out = []
        for w in windows:
            spectrum = np.abs(np.fft.rfft(w))
            peak_hz = float(np.argmax(spectrum[1:]) + 1) * 48000.0 / len(w)
            out.append(_vector(_nearest(peak_hz, FREQ), np.round(w * 32767).astype(np.int16).tobytes()))
        return np.stack(out)


# -- a generated labelled collection -----------------------------------------------------------


def make_labelled_collection(root: Path, per_label: int = 4, labels: tuple[str, ...] = LABELS) -> dict[Path, str]:
    """``per_label`` images, recordings and texts per label in ``root/<label>/``; file -> label."""
    out: dict[Path, str] = {}
    rng = np.random.default_rng(11)
    sr = 16000
    t = np.arange(sr) / sr
    for code, label in enumerate(labels):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            img = np.empty((24, 24, 3), np.uint8)
            img[..., 0] = RED[code]
            img[..., 1:] = rng.integers(0, 256, (24, 24, 2))
            p = folder / f"img{i}.png"
            Image.fromarray(img).save(p)
            out[p] = label
            wave = 0.4 * np.sin(2 * np.pi * FREQ[code] * t) + 0.02 * rng.standard_normal(sr)
            p = folder / f"snd{i}.wav"
            sf.write(p, wave.astype(np.float32), sr)
            out[p] = label
            words = [FILLER[int(j)] for j in rng.integers(0, len(FILLER), 12)]
            words.insert(int(rng.integers(0, 12)), label)
            p = folder / f"note{i}.txt"
            p.write_text(" ".join(words).capitalize() + ".\n", encoding="utf-8")
            out[p] = label
    return out


def write_labels_csv(path: Path, labels: dict[Path, str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for p, lab in sorted(labels.items()):
            w.writerow([os.path.relpath(p, path.parent), lab])
    return path
