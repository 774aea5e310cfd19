"""CLIP's images at int8: the ONNX Runtime int8 image tower, whichever path embeds them.

Both the backend (:class:`xmr.encoders.clip.ClipEncoder` at int8) and the indexing
engine (:mod:`xmr.encoders.engine`) embed images at int8 through here, so the
vectors of ``...@int8`` are the same whichever made them. It sits under both: it
imports the towers and precision, never a backend module (the backend it exports
from is handed in).
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
    """The int8 image tower of a CLIP backend encoder at int8 (its fp32 image tower is
    exported first, once). None only without ONNX Runtime or a checkpoint hash (then torch's
    int8 is the one int8 there is)."""
    if not towers.available() or not encoder.info.checkpoint_sha256:
        return None
    base = replace(encoder.info, model_id=precision.base_model_id(encoder.info.model_id))
    return towers.OnnxQueryEncoder("clip", base, export=exporter(lambda: encoder, base), precision="int8")


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
