"""Query towers: each encoder tower on its own, in ONNX Runtime, so a query pays only for what it needs.

A search embeds one text, image or recording. Through the backends that means
importing torch (2-3 s on two cores), open_clip or laion-clap's model code, and
building both towers of every model. Here each tower (CLIP text, CLIP image,
CLAP text, CLAP audio) is an ONNX model of its own, exported once per
checkpoint (:mod:`xmr.encoders.tower_export`) into xmr's models dir, keyed by
the model id and the checkpoint's sha256, and loaded with ONNX Runtime (about
0.1 s to import) only when a query needs it: a text query never touches an
image or audio tower, torch, librosa or numba.

Vectors equal the backend's within ``MAX_EXPORT_DIFF`` (checked at export on
probe inputs, and by the tests on real inputs for every tower). Models the
exporter does not cover (Hugging Face text towers, fusion CLAP, fp16 devices)
keep using the backend; so does ``XMR_QUERY_ENGINE=torch``.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from xmr.encoders.base import ModelInfo

# the on-disk side, re-exported for the callers that know the towers by this module
from xmr.encoders.tower_files import (
    FORMAT,
    MAX_EXPORT_DIFF,
    TOWERS,
    UNSUPPORTED_FILE,
    TowerUnsupported,
    available,
    model_dir,
    onnx_version,
    remember_unsupported,
    staging,
    tower_dir,
    towers_root,
    unsupported_reason,
)

__all__ = [
    "FORMAT",
    "LOADED",
    "MAX_EXPORT_DIFF",
    "TOWERS",
    "TOWER_FOR_KIND",
    "UNSUPPORTED_FILE",
    "OnnxQueryEncoder",
    "TowerUnsupported",
    "available",
    "long_lived",
    "model_dir",
    "onnx_version",
    "remember_unsupported",
    "staging",
    "tower_dir",
    "towers_root",
    "unsupported_reason",
]

# what each query part kind needs, per space
TOWER_FOR_KIND = {"text": "text", "text_file": "text", "image": "image", "audio": "audio"}

# towers built in this process, for tests and --explain: (model_id, tower)
LOADED: list[tuple[str, str]] = []
# ONNX Runtime pre-packs weights into its kernels' layout when a session starts: 0.15-0.45 s
# per tower here, won back only after a few dozen runs. A one-shot CLI query skips it
# (each run 20-40 ms slower); a long-lived process (xmr serve) turns it on.
_SESSION = {"prepack": False}


def long_lived(on: bool = True) -> None:
    """Tell the towers this process answers many queries (pre-pack weights at session start)."""
    _SESSION["prepack"] = bool(on)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class _Tower:
    def __init__(self, folder: Path, *, prepack: bool | None = None) -> None:
        import onnxruntime as ort

        self.folder = folder
        self.manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if self.manifest.get("format") != FORMAT:
            raise TowerUnsupported(f"tower format {self.manifest.get('format')!r} in {folder}")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # optimised at export
        so.log_severity_level = 3
        # no busy-waiting worker threads: one query gains nothing by them, and on a loaded machine
        # spinning threads steal the cores the work needs
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not (_SESSION["prepack"] if prepack is None else prepack):
            so.add_session_config_entry("session.disable_prepacking", "1")
        self.session = ort.InferenceSession(str(folder / "model.onnx"), so, providers=["CPUExecutionProvider"])

    def run(self, **inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, inputs)[0]


def _or_backend(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run the ONNX path; where the model turns out not to be covered, the backend's method."""

    @functools.wraps(method)
    def wrapper(self: OnnxQueryEncoder, *args: Any, **kwargs: Any) -> Any:
        if self._backend is None:
            try:
                return method(self, *args, **kwargs)
            except TowerUnsupported as exc:
                if self._fallback is None:
                    raise
                self.fallback_reason = str(exc)
                self._backend = self._fallback()
        return getattr(self._backend, method.__name__)(*args, **kwargs)

    return wrapper


class OnnxQueryEncoder:
    """The query side of one model: the ``Encoder`` methods a search uses, tower by tower."""

    def __init__(
        self,
        space: str,
        info: ModelInfo,
        *,
        root: Path | None = None,
        export: Callable[[list[str], Path], None] | None = None,
        fallback: Callable[[], Any] | None = None,
        precision: str = "fp32",
        prepack: bool | None = None,
    ) -> None:
        self.space = space
        self.info = info
        self.dim = info.dim
        self.modalities = frozenset({"text", "image"} if space == "clip" else {"text", "audio"})
        self._root = root or towers_root()  # fixed for this encoder's life
        self._export = export  # builds missing tower folders (loads the backend once)
        self._towers: dict[str, _Tower] = {}
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._fallback = fallback  # builds the backend encoder when a tower cannot be had
        self._backend: Any = None
        self.fallback_reason: str | None = None
        # int8: the towers with an int8 variant (tower_quant) run it, derived from the fp32 export
        self.precision = precision
        self._prepack = prepack  # None: as the process says (long_lived)

    @property
    def engine(self) -> str:
        return "onnx" if self._backend is None else "backend"

    def folder(self, tower: str, *, variant: bool = True) -> Path:
        name = tower
        if variant and self.precision != "fp32":
            from xmr.encoders.tower_quant import QUANTISED, variant_name

            name = variant_name(tower, self.precision) if tower in QUANTISED else tower
        return tower_dir(self.info.model_id, self.info.checkpoint_sha256, name, root=self._root)

    def ready(self, tower: str, *, variant: bool = True) -> bool:
        return (self.folder(tower, variant=variant) / "manifest.json").is_file()

    def tower(self, name: str) -> _Tower:
        with self._lock:
            if name not in self._towers:
                if name not in TOWERS[self.space]:
                    raise TowerUnsupported(f"no {name} tower in the {self.space} space")
                if not self.ready(name, variant=False):
                    if self._export is None:
                        raise TowerUnsupported(f"the {name} tower of {self.info.model_id} is not prepared")
                    self._export([name], self._root)
                    if not self.ready(name, variant=False):  # exported under another key (the checkpoint changed?)
                        raise TowerUnsupported(f"the {name} tower of {self.info.model_id} was not exported")
                if self.folder(name) != self.folder(name, variant=False):  # the int8 variant: made or remade
                    from xmr.encoders.tower_quant import quantise

                    try:
                        quantise(self.folder(name, variant=False), self.folder(name))
                    except TowerUnsupported:
                        raise
                    except (OSError, ValueError, KeyError, TypeError) as exc:  # unwritable dir, damaged manifest
                        raise TowerUnsupported(f"cannot make the int8 {name} tower: {exc}") from exc
                try:
                    self._towers[name] = _Tower(self.folder(name), prepack=self._prepack)
                except TowerUnsupported:
                    raise
                except Exception as exc:  # a damaged or unreadable export: the backend still answers
                    raise TowerUnsupported(f"cannot load the {name} tower: {exc}") from exc
                LOADED.append((self.info.model_id, name))
            return self._towers[name]

    # -- text
    def _text_tokenizer(self) -> Any:
        if self._tokenizer is None:
            t = self.tower("text")
            if self.space == "clip":
                from xmr.encoders.clip_tokenizer import ClipTokenizer

                self._tokenizer = ClipTokenizer(
                    context_length=int(t.manifest.get("context_length", 77)), cache_dir=self._root
                )
            else:
                from xmr.encoders.roberta_tokenizer import RobertaTokenizer

                self._tokenizer = RobertaTokenizer(t.folder / t.manifest["tokenizer"], t.manifest["context_length"])
        return self._tokenizer

    @_or_backend
    def count_tokens(self, text: str) -> int:
        tok = self._text_tokenizer()
        return len(tok.encode(text)) if self.space == "clip" else tok.count_tokens(text)

    @_or_backend
    def split_text(self, text: str) -> list[Any]:
        """The same passages as the backend's ``split_text``."""
        from xmr.encoders.passages import clap_passages, clip_passages

        if self.space == "clip":
            return clip_passages(text, self.count_tokens, self._text_tokenizer().context_length - 2)
        return clap_passages(text, self.count_tokens)

    @_or_backend
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        tower, tok = self.tower("text"), self._text_tokenizer()
        dynamic = bool(tower.manifest.get("dynamic_length"))
        out = []
        for i in range(0, len(texts), 64):
            chunk = list(texts[i : i + 64])
            if self.space == "clip":
                tokens = tok(chunk)
                if dynamic:  # cut after the last position read (causal mask: nothing before it changes)
                    m = tower.manifest
                    pos = tokens.argmax(-1) if m["pool"] == "argmax" else (tokens == m["eos_id"]).argmax(-1)
                    tokens = np.ascontiguousarray(tokens[:, : int(pos.max()) + 1])
                out.append(tower.run(tokens=tokens))
            else:
                feeds = tok(chunk)
                if dynamic:  # padded to the longest row, not the context: the attention mask hides padding
                    width = int(feeds["attention_mask"].sum(axis=1).max())
                    feeds = {k: np.ascontiguousarray(v[:, :width]) for k, v in feeds.items()}
                out.append(tower.run(**feeds))
        return _unit(np.concatenate(out))

    # -- images
    @_or_backend
    def image_preprocessor(self) -> Any:
        from xmr.preprocess.image import ImagePreprocessor

        if self.space != "clip":
            raise NotImplementedError("the clap space embeds audio and text, not images")
        return ImagePreprocessor(**self.tower("image").manifest["preprocess"])

    @_or_backend
    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pixels, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0, self.dim), np.float32)
        tower = self.tower("image")
        # int8 quantises activations with one scale per call: one image per call, so its
        # vector does not depend on what else is in the batch (21 against 17 ms per image here)
        step = 1 if tower.manifest.get("precision") == "int8" else 32
        return _unit(np.concatenate([tower.run(pixels=x[i : i + step]) for i in range(0, len(x), step)]))

    # -- audio
    @_or_backend
    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if len(x) == 0:
            return np.zeros((0, self.dim), np.float32)
        tower = self.tower("audio")
        # exported for one window at a time (HTS-AT's window partition fixes the batch in the graph)
        return _unit(np.concatenate([tower.run(waveform=x[i : i + 1]) for i in range(len(x))]))
