"""Test encoders that cost CPU like a model (benchmarks/ray_embed.py): the deterministic
fake encoders of the tests, plus a fixed amount of matrix work per image."""

from __future__ import annotations

import os

import numpy as np
from fake_encoders import FakeClap, FakeClip

BURN_ROUNDS = int(os.environ.get("BURN_ROUNDS", "30"))  # 1024x1024 products per image batch row
_W = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32) / 32


class BurnClip(FakeClip):
    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        x = np.resize(pixels.reshape(len(pixels), -1), (len(pixels), 1024)).astype(np.float32)
        for _ in range(BURN_ROUNDS):
            x = np.tanh(x @ _W)
        out = super().embed_images(pixels)
        return out + 0.0 * x[:, :1]  # the work is done; the vectors stay the fake ones


BurnClap = FakeClap
