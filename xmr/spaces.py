"""The embedding spaces: the one list of them, and the facts each one carries.

A space is one model's vector space (CLIP: images and text; CLAP: audio and
text); every vector lives in exactly one, and each space has its own index.
Everything that walks "every space" walks ``SPACES``. Which modalities a space
embeds is the media vocabulary's business, not this module's.

Imports nothing: settings, the CLI and the encoder registry all sit on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SpaceInfo:
    name: str
    backend: str  # "module:factory" of the built-in encoder (xmr.encoders.BACKENDS)
    default_model: str  # the model spec used when none is configured

    @property
    def model_setting(self) -> str:
        """The Settings field that names this space's model (``clip_model``)."""
        return f"{self.name}_model"

    @property
    def model_env(self) -> str:
        return f"XMR_{self.name.upper()}_MODEL"

    @property
    def backend_env(self) -> str:
        """The variable that replaces the built-in backend ("module:factory")."""
        return f"XMR_BACKEND_{self.name.upper()}"


CLIP = SpaceInfo("clip", "xmr.encoders.clip:ClipEncoder", "ViT-B-32:laion2b_s34b_b79k")
CLAP = SpaceInfo("clap", "xmr.encoders.clap:ClapEncoder", "630k-audioset-best.pt")

INFO: dict[str, SpaceInfo] = {s.name: s for s in (CLIP, CLAP)}
# every space, in the order results, listings and loops use
SPACES: tuple[str, ...] = tuple(INFO)


def model_spec(settings: Any, space: str) -> str:
    """The model spec ``settings`` configure for ``space`` ("" for a space xmr does not know)."""
    info = INFO.get(space)
    return getattr(settings, info.model_setting) if info is not None else ""
