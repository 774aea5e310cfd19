"""LAION-CLAP backend: the ``clap`` space (audio <-> text, 512-d).

The model is laion-clap's own ``CLAP`` class (HTS-AT audio tower + RoBERTa
text tower), built and loaded here without the things that make the
``laion_clap`` package unusable offline:

* ``import laion_clap`` runs ``training/data.py``, which fetches three
  tokenizers from the Hugging Face hub at import time. We never import the
  package: its ``clap_module`` submodules are loaded from its directory under a
  private package name (``_xmr_laion_clap``) so neither ``laion_clap`` nor
  ``laion_clap.training.data`` ever appears in ``sys.modules``.
* ``CLAP.__init__`` calls ``RobertaModel.from_pretrained('roberta-base')``,
  downloading weights the CLAP checkpoint overwrites anyway. Our private copy
  of ``model.py`` gets a ``RobertaModel`` that builds the architecture from
  roberta-base's config (hard-coded below) instead.
* ``load_ckpt`` prints every parameter, deletes ``position_ids``
  unconditionally and downloads into site-packages; we load the state dict
  ourselves, strictly, and never print.
* A missing roberta tokenizer silently becomes a 5-token placeholder under
  transformers 5; we require the real files and check the vocabulary size.

Audio arrives as exact 10 s windows (``xmr.preprocess.audio.windows``), so
laion-clap's random crop of long inputs is never reached and embeddings are
deterministic. Nothing in this module imports torch at import time.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xmr import paths
from xmr.encoders import precision
from xmr.encoders.base import ModelInfo, ModelStatus
from xmr.encoders.filehash import file_sha256
from xmr.encoders.hf_cache import cached_file as _hf_cached
from xmr.encoders.hf_cache import hub_cache_dir as _hf_cache_dir
from xmr.encoders.passages import CLAP_CONTEXT_LENGTH, clap_passages
from xmr.encoders.textbatch import embed_sorted, length_batches, pad_batch
from xmr.errors import ModelError, ModelMissing
from xmr.heap import release_mapped_file
from xmr.preprocess.audio import RESAMPLE_QUALITY, SAMPLE_RATE, WINDOW_S, WINDOW_SAMPLES
from xmr.settings import Settings, offline_mode

if TYPE_CHECKING:
    from xmr.preprocess.text import Passage

SPACE = "clap"
DIM = 512
CONTEXT_LENGTH = CLAP_CONTEXT_LENGTH  # laion-clap tokenizes with max_length=77, incl. <s> and </s>
HF_REPO = "lukewys/laion_clap"
ROBERTA_REPOS = ("roberta-base", "FacebookAI/roberta-base")  # old alias first: what laion-clap used
ROBERTA_VOCAB_SIZE = 50265
TOKENIZER_ENV = "XMR_CLAP_TOKENIZER"
_TOKENIZER_DOWNLOAD = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "config.json")

# Published checkpoints (https://huggingface.co/lukewys/laion_clap) -> (audio model, fusion)
PUBLISHED: dict[str, tuple[str, bool]] = {
    "630k-best.pt": ("HTSAT-tiny", False),
    "630k-audioset-best.pt": ("HTSAT-tiny", False),
    "630k-fusion-best.pt": ("HTSAT-tiny", True),
    "630k-audioset-fusion-best.pt": ("HTSAT-tiny", True),
    "music_audioset_epoch_15_esc_90.14.pt": ("HTSAT-base", False),
    "music_speech_epoch_15_esc_89.25.pt": ("HTSAT-base", False),
    "music_speech_audioset_epoch_15_esc_89.98.pt": ("HTSAT-base", False),
}

# roberta-base's config.json (the text tower's architecture; weights come from
# the CLAP checkpoint). Only these fields differ from RobertaConfig defaults or
# matter for the architecture.
ROBERTA_BASE_CONFIG: dict[str, Any] = {
    "vocab_size": 50265,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}

# HTS-AT variants as laion-clap's create_htsat_model builds them: patch embed width, depth of stage 3
_HTSAT_BY_WIDTH = {96: ("HTSAT-tiny", 6), 128: ("HTSAT-base", 12), 256: ("HTSAT-large", 12)}
_POSITION_IDS = "text_branch.embeddings.position_ids"
_ALIAS = "_xmr_laion_clap"
_import_lock = threading.Lock()


# --------------------------------------------------------------------------- resolution (no torch)


@dataclass(frozen=True)
class _Checkpoint:
    spec: str
    name: str | None  # published file name, None for an explicit path
    path: Path | None  # where it was found; None when missing
    source: str  # "local-file", "xmr-cache", "hf-cache", "laion-clap-dir"
    searched: tuple[str, ...]


def _published_name(spec: str) -> str | None:
    s = spec.strip()
    if "/" in s or "\\" in s:
        return None
    name = s if s.endswith(".pt") else f"{s}.pt"
    return name if name in PUBLISHED else None


def _laion_clap_dir() -> Path | None:
    # find_spec on a top-level name locates the package without importing it
    try:
        spec = importlib.util.find_spec("laion_clap")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _resolve_checkpoint(spec: str) -> _Checkpoint:
    name = _published_name(spec)
    if name is None:
        path = Path(spec).expanduser()
        found = path.resolve() if path.is_file() else None
        return _Checkpoint(spec, None, found, "local-file", (str(path),))
    mdir = paths.models_dir()
    candidates: list[tuple[str, Path | None, str]] = [
        ("xmr-cache", mdir / "clap" / name, str(mdir / "clap" / name)),
        ("xmr-cache", mdir / name, str(mdir / name)),
        ("hf-cache", _hf_cached(HF_REPO, name), f"Hugging Face cache {_hf_cache_dir()} (repo {HF_REPO})"),
    ]
    lc = _laion_clap_dir()
    if lc is not None:  # where laion-clap's own load_ckpt() downloads to
        candidates.append(("laion-clap-dir", lc / name, str(lc / name)))
    for source, path, _ in candidates:
        if path is not None and path.is_file():
            return _Checkpoint(spec, name, path, source, tuple(c[2] for c in candidates))
    return _Checkpoint(spec, name, None, "", tuple(c[2] for c in candidates))


def _missing_checkpoint(ck: _Checkpoint) -> ModelMissing:
    how = "pass --clap-model /path/to/file.pt or set XMR_CLAP_MODEL"
    if ck.name is None:
        return ModelMissing(
            "CLAP checkpoint file not found",
            path=ck.searched[0],
            hint=f"{how}, or name a published checkpoint ({', '.join(sorted(PUBLISHED))})",
        )
    return ModelMissing(
        f"CLAP checkpoint {ck.name} not found; looked in {'; '.join(ck.searched)}",
        hint=f"run `xmr models download` while online, or {how}",
    )


def identity(settings: Settings) -> tuple[str | None, str]:
    """(model id, checkpoint sha256) of the configured checkpoint without torch: the id only for a
    published checkpoint (a local file's names its architecture, read from its tensors).
    Raises ModelMissing as the encoder would."""
    ck = _resolve_checkpoint(settings.clap_model)
    if ck.path is None:
        raise _missing_checkpoint(ck)
    sha = _sha256(ck.path)
    if ck.name is None:
        return None, sha
    return f"clap:{ck.name[: -len('.pt')]}:{PUBLISHED[ck.name][0]}", sha


def local_model_id(amodel: str, sha: str) -> str:
    """The model id of a checkpoint given as a file."""
    return f"clap:{amodel}:sha256:{sha[:16]}"


def _tokenizer_files_ok(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    )


def _resolve_tokenizer() -> tuple[Path | None, str]:
    """Folder holding the roberta-base tokenizer files, and where it looked."""
    env = os.environ.get(TOKENIZER_ENV)
    if env:
        folder = Path(env).expanduser()
        return (folder.resolve() if _tokenizer_files_ok(folder) else None), f"{TOKENIZER_ENV}={env}"
    for repo in ROBERTA_REPOS:
        for fname in ("vocab.json", "tokenizer.json"):
            hit = _hf_cached(repo, fname)
            if hit is not None and _tokenizer_files_ok(hit.parent):
                return hit.parent, f"Hugging Face cache (repo {repo})"
    return None, f"Hugging Face cache {_hf_cache_dir()} (repos {', '.join(ROBERTA_REPOS)})"


def _missing_tokenizer(where: str) -> ModelMissing:
    return ModelMissing(
        f"RoBERTa tokenizer for CLAP not found (vocab.json + merges.txt or tokenizer.json); looked in {where}",
        hint=f"run `xmr models download` while online, or set {TOKENIZER_ENV} to a folder with roberta-base's "
        "tokenizer files",
    )


def _sha256(path: Path) -> str:
    """sha256 of a checkpoint: the HF blob name when it is one, else hashed once
    and remembered in xmr's models dir (xmr.encoders.filehash, as CLIP's are), so one
    file format lives in models_dir()/sha256-cache.json."""
    digest = file_sha256(path)
    assert digest is not None  # compute=True always yields a digest
    return digest


def _known_sha256(path: Path) -> str | None:
    """The sha256 if it costs nothing (HF blob name or already cached); for status."""
    try:
        return file_sha256(path, compute=False)
    except OSError:
        return None


# --------------------------------------------------------------------------- laion-clap model code


class _OfflineRobertaModel:
    """Stands in for ``transformers.RobertaModel`` inside laion-clap's model.py:
    builds roberta-base's architecture without fetching its weights."""

    @staticmethod
    def from_pretrained(name: str, *args: Any, **kwargs: Any) -> Any:
        if name not in ROBERTA_REPOS:
            raise ModelError(f"unexpected text tower {name!r}; only roberta-base is supported")
        from transformers import RobertaConfig, RobertaModel

        return RobertaModel(RobertaConfig(**ROBERTA_BASE_CONFIG))


class _NoTimmModel:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ModelError("timm image towers are not part of xmr's CLAP backend")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence prints, warnings and transformers' logging from library code."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)


def _laion_model_module() -> types.ModuleType:
    """laion-clap's ``clap_module/model.py`` loaded under a private package name,
    so the ``laion_clap`` package (and its tokenizer-downloading training.data)
    is never imported."""
    key = f"{_ALIAS}.clap_module.model"
    with _import_lock:
        if key in sys.modules:
            return sys.modules[key]
        root = _laion_clap_dir()
        if root is None or not (root / "clap_module" / "model.py").is_file():
            raise ModelError("laion-clap is not installed", hint="pip install laion-clap")
        for name, folder in ((_ALIAS, root), (f"{_ALIAS}.clap_module", root / "clap_module")):
            if name not in sys.modules:
                pkg = types.ModuleType(name)
                pkg.__path__ = [str(folder)]  # a package stub: submodules load from laion-clap's files
                pkg.__package__ = name
                sys.modules[name] = pkg
        # model.py imports TimmModel (image towers only); a stub spares importing timm and its warnings
        timm_stub = types.ModuleType(f"{_ALIAS}.clap_module.timm_model")
        timm_stub.TimmModel = _NoTimmModel  # type: ignore[attr-defined]
        sys.modules.setdefault(timm_stub.__name__, timm_stub)
        try:
            with _quiet():
                module = importlib.import_module(key)
        except ImportError as exc:
            raise ModelError(f"cannot load laion-clap's model code: {exc}") from exc
        module.RobertaModel = _OfflineRobertaModel  # type: ignore[attr-defined]
        module._xmr_root = root  # type: ignore[attr-defined]
        return module


def build_clap_model(
    amodel: str = "HTSAT-tiny", enable_fusion: bool = False, fusion_type: str = "None", *, init: bool = True
) -> Any:
    """laion-clap's ``CLAP`` with random weights, as ``factory.create_model``
    builds it for ``tmodel='roberta'`` (no downloads). ``init=False``: the weights are
    left uninitialised, for a strict ``load_weights`` to fill (drawing them costs 3-4 s)."""
    module = _laion_model_module()
    cfg_path = Path(module._xmr_root) / "clap_module" / "model_configs" / f"{amodel}.json"
    if not cfg_path.is_file():
        raise ModelError(f"unknown CLAP audio model {amodel!r}", path=cfg_path)
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["text_cfg"]["model_type"] = "roberta"
    cfg["enable_fusion"] = enable_fusion
    cfg["fusion_type"] = fusion_type
    weights = contextlib.nullcontext() if init else _no_random_init()
    with _quiet(), weights:
        return module.CLAP(**cfg)


_RANDOM_INIT = ("uniform_", "normal_", "erfinv_")  # what nn.init and laion-clap's own initialisers draw with


@contextlib.contextmanager
def _no_random_init() -> Iterator[None]:
    """Random initialisation as a no-op while a model whose every tensor a strict load then
    overwrites is built. Patches torch.Tensor for the duration, under the import lock."""
    import torch
    import torchlibrosa.stft as tl

    with _import_lock:
        saved = {name: getattr(torch.Tensor, name) for name in _RANDOM_INIT}
        # torchlibrosa's STFT and mel weights (parameters: the load fills them too) are computed
        # with librosa, whose first use loads numba and scipy.signal: 2 s of CPU for nothing
        librosa, dft = tl.librosa, tl.DFTBase.dft_matrix
        try:
            for name in _RANDOM_INIT:
                setattr(torch.Tensor, name, _unchanged)
            tl.librosa, tl.DFTBase.dft_matrix = _NO_LIBROSA, _zero_dft
            yield
        finally:
            for name, method in saved.items():
                setattr(torch.Tensor, name, method)
            tl.librosa, tl.DFTBase.dft_matrix = librosa, dft


def _unchanged(self: Any, *args: Any, **kwargs: Any) -> Any:
    return self


def _zero_dft(self: Any, n: int) -> np.ndarray:
    return np.zeros((n, n), np.complex64)


# the librosa calls torchlibrosa's Spectrogram and LogmelFilterBank make, answered with zeros
_NO_LIBROSA = types.SimpleNamespace(
    filters=types.SimpleNamespace(
        get_window=lambda window, n, fftbins=True: np.zeros(n),
        mel=lambda sr, n_fft, n_mels, fmin, fmax, **kw: np.zeros((n_mels, n_fft // 2 + 1)),
    ),
    util=types.SimpleNamespace(pad_center=lambda x, size, **kw: np.zeros(size)),
)


@dataclass(frozen=True)
class ClapArch:
    amodel: str  # "HTSAT-tiny" | "HTSAT-base" | "HTSAT-large"
    enable_fusion: bool
    fusion_type: str  # "None" | "aff_2d" | "iaff_2d" | "daf_2d" | "channel_map"

    def describe(self) -> str:
        return f"{self.amodel} ({'fusion ' + self.fusion_type if self.enable_fusion else 'non-fusion'})"


def derive_arch(state_dict: Mapping[str, Any], *, path: str | Path | None = None) -> ClapArch:
    """Architecture of a CLAP state dict (keys without "module."), from its keys and shapes."""
    sd = state_dict
    proj = sd.get("audio_branch.patch_embed.proj.weight")
    if proj is None:
        if any(k.startswith("audio_branch.conv_block1.") for k in sd):
            raise ModelError("PANN audio encoders are not supported; use an HTS-AT CLAP checkpoint", path=path)
        raise ModelError("not a LAION-CLAP checkpoint (no audio_branch.patch_embed.proj.weight)", path=path)
    width = int(proj.shape[0])
    if width not in _HTSAT_BY_WIDTH:
        raise ModelError(f"unknown HTS-AT variant (patch embedding width {width})", path=path)
    amodel, depth3 = _HTSAT_BY_WIDTH[width]
    blocks = {k.split(".")[4] for k in sd if k.startswith("audio_branch.layers.2.blocks.")}
    if len(blocks) != depth3:
        raise ModelError(f"{amodel} checkpoint has {len(blocks)} blocks in stage 3, expected {depth3}", path=path)
    words = sd.get("text_branch.embeddings.word_embeddings.weight")
    if words is None or tuple(words.shape) != (ROBERTA_VOCAB_SIZE, ROBERTA_BASE_CONFIG["hidden_size"]):
        raise ModelError("text tower is not RoBERTa-base; only roberta CLAP checkpoints are supported", path=path)
    if "audio_branch.patch_embed.mel_conv2d.weight" in sd:
        prefix = "audio_branch.patch_embed.fusion_model."
        if any(k.startswith(prefix + "local_att2.") for k in sd):
            fusion_type = "iaff_2d"
        elif any(k.startswith(prefix + "local_att.") for k in sd):
            fusion_type = "aff_2d"
        else:
            fusion_type = "daf_2d"
        return ClapArch(amodel, True, fusion_type)
    if "audio_branch.mel_conv1d.0.weight" in sd:
        # laion-clap itself cannot embed clips of <= 10 s with 1-D fusion in eval mode
        raise ModelError("1-D feature-fusion CLAP checkpoints are not supported", path=path)
    if int(proj.shape[1]) == 4:
        return ClapArch(amodel, True, "channel_map")
    return ClapArch(amodel, False, "None")


def _read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of a checkpoint, keys without the DataParallel "module." prefix."""
    import pickle

    import torch

    def load(**kw: Any) -> Any:
        return torch.load(str(path), map_location="cpu", **kw)

    try:
        try:
            ckpt = load(weights_only=True, mmap=True)  # mmap: no RAM copy of the optimizer state
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            ckpt = load(weights_only=True)  # legacy (non-zip) serialisation
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc).lower() and "weights only" not in str(exc).lower():
            raise ModelError(f"not a PyTorch checkpoint ({_first_line(exc)})", path=path) from exc
        # The checkpoint pickles more than tensors; laion-clap loads it this way too
        # (weights_only=False), and the user chose this file.
        try:
            ckpt = load(weights_only=False)
        except Exception as exc2:
            raise ModelError(f"cannot read checkpoint ({_first_line(exc2)})", path=path) from exc2
    except Exception as exc:
        raise ModelError(f"cannot read checkpoint ({_first_line(exc)})", path=path) from exc
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError("checkpoint holds no state_dict of tensors", path=path)
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in sd.items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_weights(model: Any, state_dict: dict[str, Any], *, path: str | Path | None = None) -> None:
    """Strict ``load_state_dict``; ``position_ids`` may be present or absent."""
    own = model.state_dict()
    sd = dict(state_dict)
    # transformers >= 4.31 no longer saves position_ids; old checkpoints have it
    if _POSITION_IDS in sd and _POSITION_IDS not in own:
        del sd[_POSITION_IDS]
    elif _POSITION_IDS in own and _POSITION_IDS not in sd:
        sd[_POSITION_IDS] = own[_POSITION_IDS]
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:3])}{more}")
        raise ModelError(f"checkpoint does not fit the CLAP architecture: {'; '.join(parts)}", path=path)
    for k, v in sd.items():  # assign takes the tensors as they are: in the model's dtypes
        if v.dtype != own[k].dtype:
            sd[k] = v.to(own[k].dtype)
    try:
        # assign: the model takes the checkpoint's (memory-mapped) tensors instead of copying them
        # into its own, so the weights are never held twice (the peak RSS of loading: -1.1 GB)
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelError(f"cannot load checkpoint: {_first_line(exc)}", path=path) from exc


def _fusion_mel(wav: Any, audio_cfg: Any) -> Any:
    """laion-clap's ``get_mel`` (torchaudio MelSpectrogram, htk mel scale, no
    norm, power 2, then AmplitudeToDB with top_db=None) written in torch, so
    torchaudio is not needed. ``wav`` is (B, N) float32; returns (B, frames, mels)."""
    import math

    import torch

    n_fft, hop, sr = int(audio_cfg.window_size), int(audio_cfg.hop_size), int(audio_cfg.sample_rate)
    window = torch.hann_window(n_fft, device=wav.device, dtype=wav.dtype)
    spec = (
        torch.stft(
            wav,
            n_fft=n_fft,
            hop_length=hop,
            win_length=n_fft,
            window=window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        .abs()
        .pow(2.0)
    )  # (B, freqs, frames)
    # torchaudio.functional.melscale_fbanks(norm=None, mel_scale="htk")
    n_freqs = n_fft // 2 + 1
    all_freqs = torch.linspace(0, sr // 2, n_freqs)
    m_min = 2595.0 * math.log10(1.0 + float(audio_cfg.fmin) / 700.0)
    m_max = 2595.0 * math.log10(1.0 + float(audio_cfg.fmax) / 700.0)
    m_pts = torch.linspace(m_min, m_max, int(audio_cfg.mel_bins) + 2)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.max(torch.zeros(1), torch.min(down, up)).to(wav.device, wav.dtype)  # (freqs, mels)
    mel = torch.matmul(spec.transpose(-1, -2), fb)  # (B, frames, mels)
    return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))


# --------------------------------------------------------------------------- the encoder


class ClapEncoder:
    """LAION-CLAP audio/text encoder for the ``clap`` space."""

    space = SPACE
    modalities = frozenset({"audio", "text"})
    dim = DIM

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        expect_amodel: str | None = None,
        expect_fusion: bool | None = None,
    ) -> None:
        settings = settings if settings is not None else Settings.from_env()
        self.settings = settings
        # Resolve everything on disk first: a missing file fails before torch loads.
        ck = _resolve_checkpoint(settings.clap_model)
        if ck.path is None:
            raise _missing_checkpoint(ck)
        tok_dir, tok_where = _resolve_tokenizer()
        if tok_dir is None:
            raise _missing_tokenizer(tok_where)
        if ck.name is not None:
            exp_amodel, exp_fusion = PUBLISHED[ck.name]
            expect_amodel = expect_amodel or exp_amodel
            expect_fusion = exp_fusion if expect_fusion is None else expect_fusion

        from xmr.encoders.device import resolve_device, use_half

        self.device = resolve_device(settings.device)
        self.half = use_half(self.device)
        self._tokenizer = _load_tokenizer(tok_dir)
        self._counter: Any = None  # unpadded copy of the tokenizer for count_tokens

        sd = _read_state_dict(ck.path)
        arch = derive_arch(sd, path=ck.path)
        if (expect_amodel and expect_amodel != arch.amodel) or (
            expect_fusion is not None and expect_fusion != arch.enable_fusion
        ):
            fusion = arch.enable_fusion if expect_fusion is None else expect_fusion
            want = f"{expect_amodel or arch.amodel} ({'fusion' if fusion else 'non-fusion'})"
            what = f"{ck.name} should be" if ck.name else "expected"
            raise ModelError(f"checkpoint is {arch.describe()} but {what} {want}", path=ck.path)
        model = build_clap_model(arch.amodel, arch.enable_fusion, arch.fusion_type, init=False)
        load_weights(model, sd, path=ck.path)
        del sd
        model.eval()
        model.to(self.device)
        self.model = model
        if self.half:
            self._convert_half()
        self.precision = precision.on_device(settings.precision, self.device.type)
        self.arch = arch
        self.audio_cfg = model.audio_cfg
        self.batch_size = settings.batch_size

        if ck.name is not None:
            sha = _sha256(ck.path)
            model_id = f"clap:{ck.name[: -len('.pt')]}:{arch.amodel}"
            pretrained: str | None = ck.name[: -len(".pt")]
        else:
            sha = _sha256(ck.path)
            model_id = local_model_id(arch.amodel, sha)
            pretrained = None
        model_id = precision.tag_model_id(model_id, self.precision)
        self.checkpoint_path = ck.path
        self.info = ModelInfo(
            model_id=model_id,
            space=SPACE,
            name=arch.amodel,
            pretrained=pretrained,
            checkpoint_sha256=sha,
            dim=DIM,
            preprocessing={
                "sample_rate": SAMPLE_RATE,
                "channels": "mean downmix",
                "resampler": RESAMPLE_QUALITY,
                "quantize": "int16 round trip",
                "window_s": WINDOW_S,
                "window_samples": WINDOW_SAMPLES,
                "filling": "repeatpad",
                "tail": "end-aligned",
                "fusion": arch.enable_fusion,
                "fusion_type": arch.fusion_type,
                "text_tokenizer": "roberta-base",
                "text_max_length": CONTEXT_LENGTH,
                "text_padding": "max_length",  # what the vectors equal; batches pad less (same vectors)
            },
        )
        # int8: audio runs the ONNX Runtime audio tower only (xmr.encoders.image_int8), as the index
        # engine runs it, so the audio tower stays fp32 here (it is what gets exported); text runs
        # torch's int8. Fusion checkpoints have no exported tower: torch's int8 throughout
        self._int8_audio = None
        if self.precision == "int8" and not arch.enable_fusion and not self.half:
            from xmr.encoders.image_int8 import int8_towers

            self._int8_audio = int8_towers(self)
        keep = ("audio_branch", "audio_projection") if self._int8_audio is not None else ()
        self.model = precision.apply(self.model, self.precision, exclude=keep)
        # building (and int8's quantising: every Linear weight) read pages of the checkpoint's map
        # that stayed resident though a forward pass needs few of them (xmr.heap): -0.43 GB at int8
        release_mapped_file(str(ck.path.resolve()))
        if self.precision == "int8" and self._int8_audio is None:
            from xmr.encoders.clap_frontend import use_fft

            use_fft(self.model.audio_branch)

    def _convert_half(self) -> None:
        """fp16 weights, except the STFT/log-mel front end, which overflows in
        fp16 (power spectra reach ~1e6, the dB floor is 1e-10): it stays fp32
        and hands fp16 log-mels to the rest of the audio tower."""
        self.model.half()
        front = self.model.audio_branch
        front.spectrogram_extractor.float()
        front.logmel_extractor.float()
        front.logmel_extractor.register_forward_hook(lambda _m, _i, out: out.half())
        self.half = True

    # ---------------------------------------------------------------- status / download

    @classmethod
    def status(cls, settings: Settings) -> ModelStatus:
        """Where the configured checkpoint and tokenizer resolve from (no torch, no network)."""
        ck = _resolve_checkpoint(settings.clap_model)
        tok_dir, tok_where = _resolve_tokenizer()
        tok_note = f"tokenizer: {tok_dir}" if tok_dir is not None else f"tokenizer: missing (looked in {tok_where})"
        arch = PUBLISHED.get(ck.name or "")
        arch_note = f"{arch[0]}{' fusion' if arch[1] else ''}; " if arch else ""
        if ck.path is None:
            return ModelStatus(
                space=SPACE,
                spec=settings.clap_model,
                source="local-file" if ck.name is None else "missing",
                location=ck.searched[0],
                present=False,
                detail=f"{arch_note}checkpoint not found (looked in {'; '.join(ck.searched)}); {tok_note}",
            )
        return ModelStatus(
            space=SPACE,
            spec=settings.clap_model,
            source=ck.source,
            location=str(ck.path),
            present=tok_dir is not None,
            size_bytes=ck.path.stat().st_size,
            sha256=_known_sha256(ck.path),
            detail=f"{arch_note}{tok_note}",
        )

    @classmethod
    def download(cls, settings: Settings) -> ModelStatus:
        """Fetch the published checkpoint and roberta-base's tokenizer into the HF cache."""
        ck = _resolve_checkpoint(settings.clap_model)
        tok_dir, _ = _resolve_tokenizer()
        if ck.path is not None and tok_dir is not None:
            return cls.status(settings)
        if ck.path is None and ck.name is None:
            raise _missing_checkpoint(ck)  # a local path: nothing to download
        if settings.offline or offline_mode():
            what = ck.name if ck.path is None else "the roberta-base tokenizer"
            raise ModelMissing(
                f"cannot download {what}: offline mode is on",
                hint="unset XMR_OFFLINE/HF_HUB_OFFLINE, or provide the files locally",
            )
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as exc:  # pragma: no cover - a dependency
            raise ModelMissing(f"huggingface_hub is not installed: {exc}") from exc
        if ck.path is None:
            assert ck.name is not None
            try:
                hf_hub_download(repo_id=HF_REPO, filename=ck.name, cache_dir=str(_hf_cache_dir()))
            except Exception as exc:
                raise ModelMissing(
                    f"cannot download {ck.name} from {HF_REPO}: {_first_line(exc)}",
                    hint="check the network, or pass --clap-model /path/to/file.pt",
                ) from exc
        if tok_dir is None and not os.environ.get(TOKENIZER_ENV):
            repo = ROBERTA_REPOS[1]
            for fname in _TOKENIZER_DOWNLOAD:
                try:
                    hf_hub_download(repo_id=repo, filename=fname, cache_dir=str(_hf_cache_dir()))
                except Exception as exc:
                    if fname in ("vocab.json", "merges.txt"):
                        raise ModelMissing(
                            f"cannot download the roberta-base tokenizer ({fname}) from {repo}: {_first_line(exc)}"
                        ) from exc
        return cls.status(settings)

    # ---------------------------------------------------------------- text

    def count_tokens(self, text: str) -> int:
        """RoBERTa tokens in ``text`` without <s>/</s>."""
        # the fast tokenizer may carry padding/truncation from tokenizer.json (padded
        # to 77, every word would look too long): count on an unpadded copy
        if self._counter is None:
            import copy

            self._counter = copy.deepcopy(self._tokenizer.backend_tokenizer)
            self._counter.no_padding()
            self._counter.no_truncation()
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def split_text(self, text: str) -> list[Passage]:
        """Passages of at most 75 RoBERTa tokens (77 with <s> and </s>)."""
        return clap_passages(text, self.count_tokens)

    def _batches(self, n: int, cpu_default: int, cuda_default: int) -> Iterator[tuple[int, int]]:
        size = self.batch_size or (cuda_default if self.device.type == "cuda" else cpu_default)
        size = max(1, int(size))
        for start in range(0, n, size):
            yield start, min(n, start + size)

    def _finish(self, emb: Any) -> np.ndarray:
        out = emb.float().cpu().numpy()
        if self.half:  # renormalise in fp32 so norms are exactly 1 to float32 precision
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out, dtype=np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        texts = list(texts)
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        # laion-clap's CLAP_Module.tokenizer() truncates to 77 and pads to 77; padding
        # only to each batch's longest gives the same vectors (xmr.encoders.textbatch)
        rows = self._tokenizer(texts, padding=False, truncation=True, max_length=CONTEXT_LENGTH)["input_ids"]
        size = next(self._batches(1 << 30, 32, 256))[1]

        def embed(idx: np.ndarray) -> np.ndarray:
            ids, mask = pad_batch([rows[i] for i in idx], self._tokenizer.pad_token_id)
            data = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
            with precision.autocast(self.precision):
                emb = self.model.encode_text(data, device=self.device)
            return self._finish(F.normalize(emb.float(), dim=-1))

        with torch.inference_mode():
            batches = length_batches([len(r) for r in rows], size, CONTEXT_LENGTH)
            return embed_sorted(len(texts), batches, embed, DIM)

    # ---------------------------------------------------------------- audio

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        """Embed (n, 480000) float32 windows at 48 kHz, already int16-quantised
        (``xmr.preprocess.audio.windows(load_audio(path))``)."""
        import torch
        import torch.nn.functional as F

        x = np.asarray(windows, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != WINDOW_SAMPLES:
            raise ValueError(f"CLAP audio windows must be (n, {WINDOW_SAMPLES}) at 48 kHz, got {x.shape}")
        if x.shape[0] == 0:
            return np.zeros((0, DIM), dtype=np.float32)
        if self._int8_audio is not None:
            from xmr.encoders.image_int8 import int8_embed_audio

            return int8_embed_audio(self._int8_audio, x)
        dtype = torch.float16 if self.half else torch.float32
        out: list[np.ndarray] = []
        with torch.inference_mode():
            # CPU: 4 windows a batch holds ~0.1 GB less activation memory than 8, no slower, and gives
            # the same vectors; int8 keeps 8 (its activation scales are per batch: vectors depend on it)
            for a, b in self._batches(x.shape[0], 8 if self.precision == "int8" else 4, 64):
                wav = torch.from_numpy(np.ascontiguousarray(x[a:b])).to(self.device)  # fp32: front end stays fp32
                inp: dict[str, Any] = {
                    "waveform": wav,
                    # every window is exactly 10 s: laion-clap's longer=False path
                    "longer": torch.zeros((b - a, 1), dtype=torch.bool, device=self.device),
                }
                if self.arch.enable_fusion:
                    # get_audio_features(data_truncating="fusion") for a 10 s clip: the mel, stacked 4x
                    mel = _fusion_mel(wav, self.audio_cfg)
                    inp["mel_fusion"] = mel.unsqueeze(1).repeat(1, 4, 1, 1).to(dtype)
                with precision.autocast(self.precision):
                    feats = self.model.encode_audio(inp, device=self.device)["embedding"]
                    emb = F.normalize(self.model.audio_projection(feats).float(), dim=-1)
                out.append(self._finish(emb))
        return np.concatenate(out, axis=0)

    # image methods of the protocol: this backend has no image modality
    def image_preprocessor(self) -> Callable[..., Any]:
        raise NotImplementedError("the clap space embeds audio and text, not images")

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError("the clap space embeds audio and text, not images")


def _load_tokenizer(folder: Path) -> Any:
    """roberta-base's tokenizer from local files, checked to be the real vocabulary."""
    from transformers import RobertaTokenizer

    try:
        with _quiet():
            tok = RobertaTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise ModelError(f"cannot load the RoBERTa tokenizer: {_first_line(exc)}", path=folder) from exc
    # transformers 5 turns missing files into a 5-token placeholder without an error
    size = len(tok)
    specials = (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id)
    if size != ROBERTA_VOCAB_SIZE or specials != (0, 1, 2, 3, ROBERTA_VOCAB_SIZE - 1):
        raise ModelError(
            f"tokenizer is not roberta-base's: vocabulary of {size} tokens (expected {ROBERTA_VOCAB_SIZE}) "
            f"with special token ids {specials} (expected (0, 1, 2, 3, {ROBERTA_VOCAB_SIZE - 1}))",
            path=folder,
            hint=f"point {TOKENIZER_ENV} at roberta-base's tokenizer files or run `xmr models download`",
        )
    return tok
