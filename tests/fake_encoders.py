"""Deterministic stand-in encoders for pipeline tests (never used by the product).

Vectors are derived from the decoded content, so the same file always gets the
same vector and a file used as a query finds itself first. Selected through the
registry's documented override: XMR_BACKEND_CLIP / XMR_BACKEND_CLAP.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

import numpy as np

from xmr.encoders.base import ModelInfo, ModelStatus
from xmr.preprocess.text import Passage

DIM = 32
CALLS: dict[str, int] = {"texts": 0, "images": 0, "audio": 0}
BUILT: list[str] = []  # the space of every encoder constructed, in order (which models a run loads)


def _slow(n: int) -> None:
    """FAKE_ENCODER_DELAY seconds per item: lets crash tests kill a run mid-batch."""
    delay = float(os.environ.get("FAKE_ENCODER_DELAY", "0") or 0)
    if delay:
        time.sleep(delay * n)


def _vec(data: bytes) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@dataclass(frozen=True)
class FakeImagePre:
    size: int = 8

    def __call__(self, path: str) -> np.ndarray:
        from xmr.preprocess.image import load_image

        return self.from_pil(load_image(path))

    def from_pil(self, img: object) -> np.ndarray:  # decoded video frames
        img = img.convert("RGB").resize((self.size, self.size))  # type: ignore[attr-defined]
        return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0


class _Fake:
    space = ""
    modalities: frozenset[str] = frozenset()
    dim = DIM
    honours_precision = True  # tags its model ids like the real backends (xmr.encoders.precision)

    def __init__(self, settings: object) -> None:
        from xmr.encoders import precision
        from xmr.settings import DEFAULT_CLAP_MODEL, DEFAULT_CLIP_MODEL

        BUILT.append(self.space)
        # the default spec is "v1"; any other spec is another model (for model-switch tests)
        spec = getattr(settings, f"{self.space}_model", "")
        version = "v1" if spec in (DEFAULT_CLIP_MODEL, DEFAULT_CLAP_MODEL, "") else spec
        # a CPU run, as far as precision goes
        self.precision = precision.on_device(getattr(settings, "precision", None), "cpu")
        self.info = ModelInfo(
            model_id=precision.tag_model_id(f"fake-{self.space}:{version}", self.precision),
            space=self.space,
            name=f"fake-{self.space}",
            pretrained=None,
            checkpoint_sha256=None,
            dim=DIM,
            preprocessing={"fake": True},
        )

    @classmethod
    def status(cls, settings: object) -> ModelStatus:
        return ModelStatus(space=cls.space, spec="fake", source="test", location=None, present=True)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        CALLS["texts"] += len(texts)
        _slow(len(texts))
        return np.stack([_vec(f"{self.space}:{t}".encode()) for t in texts]) if texts else np.zeros((0, DIM), "f4")

    def split_text(self, text: str) -> list[Passage]:
        out, start = [], 0
        while start < len(text):
            end = min(len(text), start + 200)
            if end < len(text):
                cut = text.rfind(" ", start, end)
                end = cut if cut > start else end
            out.append(Passage(text[start:end], start, end))
            start = end + (1 if end < len(text) and text[end] == " " else 0)
        return out


class FakeClip(_Fake):
    space = "clip"
    modalities = frozenset({"image", "text"})

    def image_preprocessor(self) -> FakeImagePre:
        return FakeImagePre()

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        CALLS["images"] += len(pixels)
        _slow(len(pixels))
        return np.stack([_vec(np.round(p * 255).astype(np.uint8).tobytes()) for p in pixels])


class FakeClap(_Fake):
    space = "clap"
    modalities = frozenset({"audio", "text"})

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        CALLS["audio"] += len(windows)
        _slow(len(windows))
        return np.stack([_vec(np.round(w * 32767).astype(np.int16).tobytes()) for w in windows])


class ThumbClip(FakeClip):
    """An image's vector is its centred 8 x 8 colour thumbnail: near-identical pictures (resized,
    recompressed, slightly cropped) get near-identical vectors, unlike FakeClip's hashes.
    Selected with XMR_BACKEND_CLIP=fake_encoders:ThumbClip (near-duplicate tests, benchmarks)."""

    dim = 192

    def __init__(self, settings: object) -> None:
        super().__init__(settings)
        from dataclasses import replace

        self.info = replace(self.info, model_id=self.info.model_id.replace("fake-clip", "thumb-clip"), dim=self.dim)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        CALLS["texts"] += len(texts)
        out = [np.resize(_vec(f"{self.space}:{t}".encode()), self.dim) for t in texts]
        return np.stack([v / np.linalg.norm(v) for v in out]) if out else np.zeros((0, self.dim), "f4")

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        CALLS["images"] += len(pixels)
        flat = pixels.reshape(len(pixels), -1).astype(np.float32)
        flat = flat - flat.mean(axis=1, keepdims=True)
        return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-6)


class ThumbClap(FakeClap):
    """An audio window's vector is its magnitude spectrum in 64 bands, centred: a re-encode of
    the same signal lands close. XMR_BACKEND_CLAP=fake_encoders:ThumbClap."""

    dim = 64

    def __init__(self, settings: object) -> None:
        super().__init__(settings)
        from dataclasses import replace

        self.info = replace(self.info, model_id=self.info.model_id.replace("fake-clap", "thumb-clap"), dim=self.dim)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        CALLS["texts"] += len(texts)
        out = [np.resize(_vec(f"{self.space}:{t}".encode()), self.dim) for t in texts]
        return np.stack([v / np.linalg.norm(v) for v in out]) if out else np.zeros((0, self.dim), "f4")

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        CALLS["audio"] += len(windows)
        spec = np.abs(np.fft.rfft(windows.astype(np.float32), axis=1))
        bands = np.stack([b.mean(axis=1) for b in np.array_split(spec, self.dim, axis=1)], axis=1)
        v = bands - bands.mean(axis=1, keepdims=True)
        return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)).astype(np.float32)
