"""CLIP's images and CLAP's sounds at int8: their ONNX Runtime towers, whichever path embeds them.

Both the backends (:class:`xmr.encoders.clip.ClipEncoder` and
:class:`xmr.encoders.clap.ClapEncoder` at int8) and the indexing engine
(:mod:`xmr.encoders.engine`) embed images and audio at int8 through here, so the
vectors of ``...@int8`` are the same whichever made them. It sits under both: it
imports the towers and precision, never a backend module (the backend it exports
from is handed in).

Images run the int8 image tower (:mod:`tower_quant`). Sounds run the fp32 audio
tower: ONNX Runtime's dynamic int8 of HTS-AT strayed to cosine 0.991 from fp32 on
a pure tone (torch's int8: 0.9997), and the fp32 tower in ONNX Runtime is already
faster here than torch's int8 (0.24 against 0.36 s of CPU per 10 s window).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from xmr.encoders import precision, towers
from xmr.encoders.base import ModelInfo
from xmr.errors import ModelError


def int8_images(encoder: Any) -> towers.OnnxQueryEncoder | None:
    """The int8 towers of a backend encoder at int8 (CLIP's image tower, CLAP's audio tower:
    its fp32 tower is exported first, once). None only without ONNX Runtime or a checkpoint
    hash (then torch's int8 is the one int8 there is)."""
    if not towers.available() or not encoder.info.checkpoint_sha256:
        return None
    base = replace(encoder.info, model_id=precision.base_model_id(encoder.info.model_id))
    return towers.OnnxQueryEncoder(encoder.space, base, export=exporter(lambda: encoder, base), precision="int8")


int8_towers = int8_images  # the same for CLAP's audio


def int8_embed(tower: towers.OnnxQueryEncoder, pixels: np.ndarray) -> np.ndarray:
    """Images through the int8 tower. Where it cannot be had there is no second int8: vectors
    of another quantiser under the same ``@int8`` id would not be comparable with the rest."""
    try:
        return tower.embed_images(pixels)
    except towers.TowerUnsupported as exc:
        raise ModelError(
            f"cannot run CLIP's int8 image tower for {tower.info.model_id}: {exc}",
            hint="index images at --precision fp32 or bf16",
        ) from exc


def int8_embed_audio(tower: towers.OnnxQueryEncoder, windows: np.ndarray) -> np.ndarray:
    """10 s windows through the audio tower CLAP runs at int8 (the fp32 one: see the module doc;
    one window per call, as it is exported). No second int8 where it cannot be had."""
    try:
        return tower.embed_audio(windows)
    except towers.TowerUnsupported as exc:
        raise ModelError(
            f"cannot run CLAP's audio tower for {tower.info.model_id} at int8: {exc}",
            hint="index audio at --precision fp32 or bf16",
        ) from exc


def exporter(backend: Callable[[], Any], base: ModelInfo) -> Callable[[list[str], Path], None]:
    """An ``export`` callback for :class:`towers.OnnxQueryEncoder`: writes the named towers of
    ``backend()`` (built only when an export is needed) under ``base``'s model id."""

    def export(names: list[str], root: Path) -> None:
        from xmr.encoders.tower_export import export_towers

        try:
            export_towers(backend(), names, root=root, model_id=base.model_id)
        except towers.TowerUnsupported as exc:
            towers.remember_unsupported(base, str(exc), root=root)
            raise
        except OSError as exc:  # a models dir that cannot be written: the backend serves
            raise towers.TowerUnsupported(f"cannot write the {', '.join(names)} tower: {exc}") from exc
        except Exception as exc:  # the exporter failed: the backend serves, and the next run retries
            raise towers.TowerUnsupported(f"cannot export the {', '.join(names)} tower: {exc}") from exc

    return export
