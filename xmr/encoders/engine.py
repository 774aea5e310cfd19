"""What embeds images while indexing: CLIP's exported image tower in ONNX Runtime, or the backend.

A run that embeds images through the backend first imports torch and
open_clip and builds the whole model: 6-8 s on two cores before the first
image, more than a naive loop's encode of a couple of hundred photos. With the
image tower exported (:mod:`xmr.encoders.towers`, once per checkpoint: by the
first search, ``xmr models prepare``, or the first run that embeds a batch of
``EXPORT_MIN_IMAGES`` images), images go through ONNX Runtime (0.2-0.4 s to
start, and faster per image than torch here), and torch is imported only when
text needs embedding too.

CLAP's sounds go the same way (:class:`AudioTowerEncoder`): with its audio tower
exported, a run that embeds audio windows only (sound files, videos' soundtracks)
never imports torch, transformers or laion-clap's model code, nor builds the
model (7-8 s of CPU and ~0.5 GB here). The exported tower records the model's
identity (``model_info`` in its manifest), so that run knows what it records
without reading the checkpoint.

At int8, CLIP's images always run the ONNX int8 tower (:mod:`tower_quant`) and
CLAP's sounds the ONNX audio tower (fp32: see :mod:`image_int8`), from this
module or from the backend itself, so the vectors of ``...@int8`` are the same
whichever path made them; text stays torch's int8.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from xmr.encoders import load_encoder, precision, towers
from xmr.encoders.base import ModelInfo
from xmr.encoders.device import cpu_without_torch
from xmr.encoders.image_int8 import exporter, int8_embed, int8_embed_audio
from xmr.errors import ModelError, UsageError
from xmr.settings import Settings

ENGINES = ("onnx", "torch")
# a first run exports the image tower (4-5 s for ViT-B-32 here, once per checkpoint) once it
# has this many images to embed: about what the export costs in torch encode time
EXPORT_MIN_IMAGES = 64
# and CLAP's audio tower once it has this many 10 s windows (a few minutes of sound)
EXPORT_MIN_WINDOWS = 24


def uses_towers(space: str, settings: Settings) -> bool:
    engine = (settings.index_engine or "onnx").strip().lower()
    if engine not in ENGINES:
        raise UsageError(f"unknown index engine {engine!r} (XMR_INDEX_ENGINE); choose from {', '.join(ENGINES)}")
    return (
        space in ("clip", "clap")
        and engine == "onnx"
        and space not in settings.backends
        and (settings.precision or precision.DEFAULT) in ("fp32", "int8")
        and cpu_without_torch(settings.device)
        and towers.available()
    )


def index_encoder(space: str, settings: Settings, *, prepack: bool | None = True) -> Any:
    """The encoder ``xmr index`` embeds ``space`` with (see the module doc); ``prepack=None``
    for a one-shot query (as the process says: xmr.encoders.towers.long_lived)."""
    if not uses_towers(space, settings):
        return load_encoder(space, settings)
    if space == "clap":
        return _clap_index_encoder(settings, prepack=prepack)
    from xmr.encoders import clip

    ident = clip.identity(settings)
    base = ModelInfo(
        model_id=ident.model_id,
        space=space,
        name=ident.resolved.name,
        pretrained=ident.resolved.pretrained,
        checkpoint_sha256=ident.sha256,
        dim=0,
    )
    if not ident.sha256 or (settings.precision != "int8" and towers.unsupported_reason(base)):
        return load_encoder(space, settings)
    return ImageTowerEncoder(settings, base, prepack=prepack)


class _TowerBacked:
    """What the index's tower encoders share: the backend (the model itself), built the first
    time text, an export or an uncovered input needs it and checked against what the exported
    tower says it was made from; text always goes to it."""

    space: str
    tower: str  # the exported tower's name: "image" or "audio"
    settings: Settings
    dim: int
    _backend: Any

    def _tower_folder(self) -> Path:
        raise NotImplementedError

    @property
    def engine(self) -> str:
        return "onnx" if self._backend is None else "onnx+backend"

    def backend(self) -> Any:
        if self._backend is None:
            b = load_encoder(self.space, self.settings)
            known = getattr(self, "info", None)  # None while __init__ still asks the backend for it
            if known is not None and (b.info.model_id, b.info.dim, b.info.preprocessing) != (
                known.model_id,
                known.dim,
                known.preprocessing,
            ):
                raise ModelError(
                    f"the exported {self.tower} tower of {known.model_id} does not match its model ({b.info.model_id})",
                    hint=f"remove {self._tower_folder().parent} and index again",
                )
            self._backend = b
        return self._backend

    # -- text
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return self.backend().embed_texts(texts)

    def split_text(self, text: str) -> list[Any]:
        return self.backend().split_text(text)

    def count_tokens(self, text: str) -> int:
        return self.backend().count_tokens(text)


class ImageTowerEncoder(_TowerBacked):
    """CLIP for indexing: images through ONNX Runtime, text (and images, where the tower
    cannot serve) through the backend, which is built the first time it is needed."""

    space, tower = "clip", "image"
    modalities = frozenset({"image", "text"})

    def __init__(self, settings: Settings, base: ModelInfo, *, prepack: bool | None = True) -> None:
        self.settings = settings
        self.precision = settings.precision or precision.DEFAULT
        self._backend: Any = None
        # pre-packed weights (indexing): slower to start (0.2-0.4 s), won back within a batch of images
        self._images = towers.OnnxQueryEncoder(
            "clip", base, export=exporter(self.backend, base), precision=self.precision, prepack=prepack
        )
        self._use_tower = True
        self._by_backend = 0  # images this run embedded through the backend
        try:
            from xmr.preprocess.image import ImagePreprocessor

            m = json.loads((self._images.folder("image", variant=False) / "manifest.json").read_text(encoding="utf-8"))
            self.dim = int(m["dim"])
            self._preprocessor = ImagePreprocessor(**m["preprocess"])
            pp = self._preprocessor.provenance()
            self.info = replace(
                base, model_id=precision.tag_model_id(base.model_id, self.precision), dim=self.dim, preprocessing=pp
            )
        except (OSError, ValueError, KeyError, TypeError):
            # no export yet (or a damaged one): the backend is needed now, for the preprocessing
            # and the export itself
            b = self.backend()
            self.dim, self.info, self._preprocessor = b.dim, b.info, b.image_preprocessor()
            if getattr(getattr(b, "_device", None), "type", "cpu") != "cpu":  # a GPU the check missed
                self._use_tower, self.precision = False, b.precision

    def _tower_folder(self) -> Path:
        return self._images.folder("image", variant=False)

    # -- images
    def image_preprocessor(self) -> Any:
        return self._preprocessor

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, self.dim), np.float32)
        if self._use_tower and (
            self._images.ready("image", variant=False)
            or self.precision == "int8"
            or self._by_backend + len(pixels) >= EXPORT_MIN_IMAGES
        ):
            if self.precision == "int8":
                return int8_embed(self._images, pixels)
            try:
                return self._images.embed_images(pixels)
            except towers.TowerUnsupported:
                self._use_tower = False  # the backend serves this run: the same vectors within 1e-5
        self._by_backend += len(pixels)
        return self.backend().embed_images(pixels)



# ----------------------------------------------------------------------------- CLAP


def _clap_index_encoder(settings: Settings, *, prepack: bool | None) -> Any:
    from xmr.encoders import clap

    known_id, sha = clap.identity(settings)
    found = _exported_clap(known_id, sha)
    if found is None:
        if (settings.precision or precision.DEFAULT) == "int8":
            return load_encoder("clap", settings)  # its audio runs the int8 tower, exported at first need
        return AudioTowerEncoder(settings, None, prepack=prepack)
    if settings.precision != "int8" and towers.unsupported_reason(found):
        return load_encoder("clap", settings)
    return AudioTowerEncoder(settings, found, prepack=prepack)


def _exported_clap(known_id: str | None, sha: str) -> ModelInfo | None:
    """The model an exported CLAP audio tower of this checkpoint was made from, as its manifest
    records it (None where there is none yet, or one from before manifests recorded it)."""
    from xmr.encoders import clap

    for f in sorted(towers.towers_root().glob(f"*-{sha[:16]}/audio/manifest.json")):
        try:
            m = json.loads(f.read_text(encoding="utf-8"))
            mid, info = str(m["model_id"]), m.get("model_info")
            if m.get("checkpoint_sha256") != sha or m.get("space") != "clap" or not isinstance(info, dict):
                continue
            if mid != known_id and not (known_id is None and mid == clap.local_model_id(mid.split(":")[1], sha)):
                continue
            return ModelInfo(
                model_id=mid,
                space="clap",
                name=info["name"],
                pretrained=info.get("pretrained"),
                checkpoint_sha256=sha,
                dim=int(m["dim"]),
                preprocessing=dict(info["preprocessing"]),
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            continue
    return None


def _record_model_info(folder: Path, info: ModelInfo) -> None:
    """Add ``model_info`` to an exported audio tower's manifest that lacks it (written by an
    older xmr), so the next run finds the model without building it. Best effort."""
    import contextlib
    import os

    f = folder / "manifest.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        m = json.loads(f.read_text(encoding="utf-8"))
        if "model_info" in m or m.get("model_id") != info.model_id:
            return
        if m.get("checkpoint_sha256") != info.checkpoint_sha256:
            return
        m["model_info"] = {"name": info.name, "pretrained": info.pretrained, "preprocessing": info.preprocessing}
        tmp = f.with_name(f".manifest-{os.getpid()}.json")
        tmp.write_text(json.dumps(m, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, f)


class AudioTowerEncoder(_TowerBacked):
    """CLAP for indexing: audio windows through ONNX Runtime, text (and audio, where the tower
    cannot serve) through the backend, which is built the first time it is needed."""

    space, tower = "clap", "audio"
    modalities = frozenset({"audio", "text"})

    def __init__(self, settings: Settings, base: ModelInfo | None, *, prepack: bool | None = True) -> None:
        self.settings = settings
        self.precision = settings.precision or precision.DEFAULT
        self._backend: Any = None
        self._use_tower = True
        self._by_backend = 0  # windows this run embedded through the backend
        if base is None:  # no export yet: the backend names the model (and exports it when worth it)
            b = self.backend()
            base = replace(b.info, model_id=precision.base_model_id(b.info.model_id))
            if getattr(getattr(b, "device", None), "type", "cpu") != "cpu" or getattr(b, "half", False):
                self._use_tower, self.precision = False, b.precision
        self._base = base
        self.dim = base.dim
        self.info = replace(base, model_id=precision.tag_model_id(base.model_id, self.precision))
        self._audio = towers.OnnxQueryEncoder(
            "clap", base, export=exporter(self.backend, base), precision=self.precision, prepack=prepack
        )
        if self._backend is not None:  # a tower exported before manifests named the model: name it now
            _record_model_info(self._audio.folder("audio", variant=False), base)

    def _tower_folder(self) -> Path:
        return self._audio.folder("audio", variant=False)

    # -- audio
    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        n = len(windows)
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        if self._use_tower and self.precision == "int8":
            return int8_embed_audio(self._audio, windows)
        if self._use_tower and (
            self._audio.ready("audio", variant=False) or self._by_backend + n >= EXPORT_MIN_WINDOWS
        ):
            try:
                return self._audio.embed_audio(windows)
            except towers.TowerUnsupported:
                self._use_tower = False  # the backend serves this run: the same vectors within 1e-5
        self._by_backend += n
        return self.backend().embed_audio(windows)

