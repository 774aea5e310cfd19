"""The encoder protocol every backend implements.

A backend owns one embedding *space* ("clip" or "clap"). Inputs arrive already
decoded and preprocessed (so decoding can happen in worker processes); outputs
are L2-normalised float32 numpy arrays of shape (n, dim).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from xmr.preprocess.text import Passage


@dataclass(frozen=True)
class ModelStatus:
    """What ``xmr models`` shows for one configured model; computed without torch."""

    space: str
    spec: str  # what the user configured, e.g. "ViT-B-32:laion2b_s34b_b79k"
    source: str  # "hf-cache", "local-file", "local-dir", "xmr-cache", ...
    location: str | None  # where the weights are (or were looked for)
    present: bool
    size_bytes: int | None = None
    sha256: str | None = None
    detail: str = ""


@dataclass
class ModelInfo:
    """Provenance recorded in the catalogue for every vector this model makes."""

    model_id: str  # stable id, e.g. "clip:ViT-B-32:laion2b_s34b_b79k" or "clap:HTSAT-tiny:sha256:ab12.."
    space: str
    name: str  # architecture name
    pretrained: str | None  # tag, hub id, or None when loaded from a file
    checkpoint_sha256: str | None
    dim: int
    preprocessing: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Encoder(Protocol):
    space: str
    modalities: frozenset[str]  # subset of {"image", "audio", "text"}
    dim: int
    info: ModelInfo

    def embed_texts(self, texts: list[str]) -> np.ndarray: ...

    def split_text(self, text: str) -> list[Passage]:
        """Passages that fit this encoder's text context, with character offsets."""
        ...

    # image backends only
    def image_preprocessor(self) -> Any:
        """A picklable callable ``(path) -> np.ndarray (3, H, W) float32``."""
        ...

    def embed_images(self, pixels: np.ndarray) -> np.ndarray: ...

    # audio backends only: windows are (n, samples) float32 at 48 kHz
    def embed_audio(self, windows: np.ndarray) -> np.ndarray: ...
