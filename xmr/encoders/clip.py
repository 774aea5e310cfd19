"""The ``clip`` space: OpenCLIP image and text towers.

Model specs (``--clip-model`` / ``XMR_CLIP_MODEL``):

* ``ARCH:TAG``          an open_clip architecture and pretrained tag, e.g. ``ViT-B-32:laion2b_s34b_b79k``
* ``ARCH:/path/file``   the architecture with a checkpoint file (.pt/.pth/.bin/.safetensors)
* ``hf-hub:ORG/REPO``   an open_clip export on the Hugging Face Hub
* ``local-dir:FOLDER``  such an export on disk (``open_clip_config.json`` + weights)

Weights are always resolved by xmr itself (Hugging Face cache, then xmr's
models dir) and handed to open_clip as a file, with the Hugging Face libraries
forced offline while the model is built: open_clip never downloads and nothing
retries for tens of seconds. Downloads happen only in ``download()`` (or when a
model is missing and we are online), through huggingface_hub into its cache.

Importing this module does not import torch or open_clip; ``status()`` needs
neither (open_clip's table of pretrained tags is read without its package).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import logging
import os
import sys
import threading
import types
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmr.encoders import precision
from xmr.encoders.base import ModelInfo, ModelStatus
from xmr.encoders.filehash import file_sha256
from xmr.encoders.hf_cache import cached_file as _hf_cached
from xmr.encoders.hf_cache import hub_cache_dir as hf_cache_dir
from xmr.encoders.hf_cache import repo_folder as _hf_repo_folder
from xmr.encoders.passages import clip_passages
from xmr.encoders.textbatch import ClipTextRunner, embed_sorted, length_batches
from xmr.errors import ModelError, ModelMissing, UsageError
from xmr.paths import models_dir
from xmr.preprocess.image import ImagePreprocessor
from xmr.preprocess.text import Passage
from xmr.settings import offline_mode

if TYPE_CHECKING:
    import numpy as np

    from xmr.settings import Settings

SPACE = "clip"
OPTION_HINT = "--clip-model / XMR_CLIP_MODEL"
# open_clip's file names in its Hugging Face exports, preferred first
HF_SAFE_WEIGHTS = "open_clip_model.safetensors"
HF_WEIGHTS = "open_clip_pytorch_model.bin"
HF_CONFIG = "open_clip_config.json"
LOCAL_DIR_WEIGHTS = (HF_SAFE_WEIGHTS, "open_clip_pytorch_model.safetensors", HF_WEIGHTS, "open_clip_pytorch_model.pth")
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")
# files an HF text tower / tokenizer needs (its weights come from the CLIP checkpoint)
HF_TEXT_PATTERNS = ["*.json", "*.model", "*.txt", "*.tiktoken"]
HF_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "sentencepiece.bpe.model",
    "spiece.model",
    "vocab.json",
    "vocab.txt",
)

DEFAULT_BATCH = {"cuda": 128, "mps": 64, "cpu": 32}
PROBE_TIMEOUT_S = 5.0  # one HEAD request, no retries, before any download


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ClipSpec:
    """A parsed model spec; ``kind`` is tag, file, hf-hub or local-dir."""

    raw: str
    kind: str
    arch: str | None = None  # built-in architecture (tag and file specs)
    tag: str | None = None
    path: Path | None = None  # checkpoint file or export folder
    repo: str | None = None  # hf-hub repo id


def parse_spec(spec: str) -> ClipSpec:
    raw = (spec or "").strip()
    usage = f"expected ARCH:TAG, ARCH:/path/to/weights, hf-hub:ORG/REPO or local-dir:FOLDER ({OPTION_HINT})"
    if raw.startswith("hf-hub:"):
        repo = raw[len("hf-hub:") :].strip().strip("/")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise UsageError(f"invalid CLIP model {raw!r}: hf-hub needs ORG/REPO", hint=usage)
        return ClipSpec(raw, "hf-hub", repo=repo)
    if raw.startswith("local-dir:"):
        folder = raw[len("local-dir:") :].strip()
        if not folder:
            raise UsageError(f"invalid CLIP model {raw!r}: local-dir needs a folder", hint=usage)
        return ClipSpec(raw, "local-dir", path=Path(folder).expanduser().resolve())
    arch, sep, rest = raw.partition(":")
    arch, rest = arch.strip().replace("/", "-"), rest.strip()
    if not sep or not arch or not rest:
        raise UsageError(f"invalid CLIP model {raw!r}", hint=usage)
    _check_arch(arch, raw)
    looks_like_path = (
        "/" in rest
        or os.sep in rest
        or rest.startswith(("~", "."))
        or rest.lower().endswith(WEIGHT_SUFFIXES)
        or os.path.exists(os.path.expanduser(rest))
    )
    if looks_like_path:
        return ClipSpec(raw, "file", arch=arch, path=Path(rest).expanduser().resolve())
    tag = rest.lower().replace("-", "_")  # open_clip's tag normalisation
    if not _pretrained_cfg(arch, tag):
        tags = _tags_for(arch)
        known = ", ".join(tags) if tags else "none (give a weights file: ARCH:/path/to/weights)"
        raise UsageError(f"unknown pretrained tag {rest!r} for CLIP architecture {arch}", hint=f"known tags: {known}")
    return ClipSpec(raw, "tag", arch=arch, tag=tag)


# ------------------------------------------------- open_clip metadata without torch

_META_PKG = "_xmr_open_clip_meta"
_meta_lock = threading.Lock()
_meta_module: types.ModuleType | None = None


def _open_clip_dir() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("open_clip is not installed", hint="pip install open_clip_torch")
    return Path(next(iter(spec.submodule_search_locations)))


def _pretrained_registry() -> types.ModuleType:
    """open_clip's ``pretrained`` module (tags -> hub ids and preprocessing).

    Importing ``open_clip`` imports torch (seconds); the tag table itself
    needs nothing heavy, so load that one file under a private package name
    (with ``safetensors.torch`` hidden, as it too would pull in torch).
    """
    global _meta_module
    real = sys.modules.get("open_clip.pretrained")
    if real is not None:
        return real
    with _meta_lock:
        if _meta_module is None:
            pkg = types.ModuleType(_META_PKG)
            pkg.__path__ = [str(_open_clip_dir())]
            sys.modules.setdefault(_META_PKG, pkg)
            hide = "torch" not in sys.modules and "safetensors.torch" not in sys.modules
            if hide:
                sys.modules["safetensors.torch"] = None  # type: ignore[assignment]  # -> ImportError
            try:
                _meta_module = importlib.import_module(f"{_META_PKG}.pretrained")
            finally:
                if hide:
                    sys.modules.pop("safetensors.torch", None)
        return _meta_module


def _pretrained_cfg(arch: str, tag: str) -> dict[str, Any]:
    return dict(_pretrained_registry().get_pretrained_cfg(arch, tag) or {})


def _tags_for(arch: str) -> list[str]:
    return list(_pretrained_registry().list_pretrained_tags_by_model(arch))


def _arch_names() -> list[str]:
    return sorted(p.stem for p in (_open_clip_dir() / "model_configs").glob("*.json"))


@functools.cache
def _arch_config_text(arch: str) -> str | None:
    path = _open_clip_dir() / "model_configs" / f"{arch}.json"
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _arch_config(arch: str) -> dict[str, Any] | None:
    text = _arch_config_text(arch)
    if text is None:
        oc = sys.modules.get("open_clip")  # a config registered at run time with add_model_config
        return oc.get_model_config(arch) if oc is not None else None
    return json.loads(text)  # a fresh dict each time: callers may modify it


def _check_arch(arch: str, raw: str) -> None:
    if _arch_config(arch) is None:
        import difflib

        close = difflib.get_close_matches(arch, _arch_names(), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see open_clip.list_models()"
        raise UsageError(f"unknown CLIP architecture {arch!r} in {raw!r}", hint=hint)


_PP_KEYS = ("mean", "std", "interpolation", "resize_mode")


def _tag_preprocess(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(cfg[k]) if isinstance(cfg[k], tuple) else cfg[k]) for k in _PP_KEYS if k in cfg}


def _arch_preprocess(arch: str) -> dict[str, Any]:
    """Preprocessing for a bare checkpoint: what the architecture's tags use.

    open_clip applies a tag's preprocessing only when loading *by tag*; for a
    file it falls back to generic defaults, which are wrong for e.g. SigLIP.
    Take the setting most of the architecture's tags share.
    """
    cfgs = [_tag_preprocess(_pretrained_cfg(arch, t)) for t in _tags_for(arch)]
    if not cfgs:
        return {}
    counts = Counter(json.dumps(c, sort_keys=True) for c in cfgs)
    return json.loads(counts.most_common(1)[0][0])


# ------------------------------------------------------------------ resolution


@dataclass
class _Resolved:
    """Where everything a spec needs is (or would be), computed without torch."""

    spec: ClipSpec
    name: str  # architecture name for ModelInfo
    pretrained: str | None
    model_cfg: dict[str, Any] | None
    preprocess: dict[str, Any] = field(default_factory=dict)  # overrides handed to open_clip
    quick_gelu: bool = False
    checkpoint: Path | None = None
    config_file: Path | None = None  # open_clip_config.json (hf-hub, local-dir)
    source: str = "hf-cache"
    looked: list[str] = field(default_factory=list)
    hub_repo: str | None = None  # where a download would come from
    hub_files: tuple[str, ...] = ()  # candidate weight names, preferred first
    missing_text: list[str] = field(default_factory=list)  # HF repos the text tower needs, not cached
    problem: str = ""  # why it cannot be used, if known without loading

    @property
    def present(self) -> bool:
        return self.checkpoint is not None and not self.missing_text and not self.problem


def _weight_candidates(hf_hub: str) -> tuple[str, tuple[str, ...]]:
    # open_clip's rule: "org/repo/" means the default file, with a .safetensors twin preferred
    repo, filename = os.path.split(hf_hub)
    if not filename or filename == HF_WEIGHTS:
        return repo, (HF_SAFE_WEIGHTS, HF_WEIGHTS)
    if filename.endswith((".bin", ".pth")):
        return repo, (filename[:-4] + ".safetensors", filename)
    return repo, (filename,)


def _text_assets_missing(model_cfg: dict[str, Any] | None, *, tokenizer_in: Path | None = None) -> list[str]:
    """HF repos (config/tokenizer) the text tower needs that are not in the HF cache."""
    text_cfg = (model_cfg or {}).get("text_cfg", {})
    missing: list[str] = []
    model_name = text_cfg.get("hf_model_name")
    if model_name and _hf_cached(model_name, "config.json") is None:
        missing.append(model_name)
    tok_name = text_cfg.get("hf_tokenizer_name")
    if tok_name and tokenizer_in is None and tok_name not in missing:
        if not any(_hf_cached(tok_name, f) for f in HF_TOKENIZER_FILES):
            missing.append(tok_name)
    return missing


def _match_builtin(model_cfg: dict[str, Any]) -> str | None:
    for name in _arch_names():
        if _arch_config(name) == model_cfg:
            return name
    return None


def _resolve(spec: ClipSpec) -> _Resolved:
    if spec.kind == "tag":
        return _resolve_tag(spec)
    if spec.kind == "file":
        return _resolve_file(spec)
    if spec.kind == "hf-hub":
        return _resolve_hub(spec)
    return _resolve_local_dir(spec)


def _resolve_tag(spec: ClipSpec) -> _Resolved:
    assert spec.arch and spec.tag
    cfg = _pretrained_cfg(spec.arch, spec.tag)
    model_cfg = _arch_config(spec.arch)
    res = _Resolved(
        spec, spec.arch, spec.tag, model_cfg, preprocess=_tag_preprocess(cfg), quick_gelu=bool(cfg.get("quick_gelu"))
    )
    xmr_dir = models_dir() / "clip" / spec.arch / spec.tag
    if cfg.get("hf_hub"):
        res.hub_repo, res.hub_files = _weight_candidates(cfg["hf_hub"])
        res.looked.append(f"the Hugging Face cache ({_hf_repo_folder(res.hub_repo)})")
        for name in res.hub_files:
            found = _hf_cached(res.hub_repo, name)
            if found:
                res.checkpoint, res.source = found, "hf-cache"
                break
    else:
        res.hub_files = (HF_SAFE_WEIGHTS, HF_WEIGHTS)
    if res.checkpoint is None:
        names = list(res.hub_files)
        if cfg.get("url"):  # legacy URL-only tags: open_clip's own download cache too
            names.append(os.path.basename(cfg["url"]))
            legacy = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
            res.looked.append(str(legacy))
            if legacy.is_file():
                res.checkpoint, res.source = legacy, "clip-cache"
        res.looked.append(str(xmr_dir))
        for name in names:
            if res.checkpoint is None and (xmr_dir / name).is_file():
                res.checkpoint, res.source = xmr_dir / name, "xmr-cache"
        if res.checkpoint is None:
            res.source = "hf-cache" if res.hub_repo else "xmr-cache"
    res.missing_text = _text_assets_missing(model_cfg)
    return res


def _resolve_file(spec: ClipSpec) -> _Resolved:
    assert spec.arch and spec.path
    res = _Resolved(
        spec,
        spec.arch,
        None,
        _arch_config(spec.arch),
        preprocess=_arch_preprocess(spec.arch),
        source="local-file",
        looked=[str(spec.path)],
    )
    if spec.path.is_file():
        res.checkpoint = spec.path
    elif spec.path.exists():
        res.problem = "not a file"
    res.missing_text = _text_assets_missing(res.model_cfg)
    return res


def _read_export_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read open_clip config: {exc}", path=path) from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg"), dict):
        raise ModelError("not an open_clip config: no 'model_cfg' section", path=path)
    return cfg


def _resolve_hub(spec: ClipSpec) -> _Resolved:
    assert spec.repo
    res = _Resolved(
        spec,
        spec.repo.split("/")[-1],
        f"hf-hub:{spec.repo}",
        None,
        hub_repo=spec.repo,
        hub_files=(HF_SAFE_WEIGHTS, HF_WEIGHTS),
    )
    res.looked.append(f"the Hugging Face cache ({_hf_repo_folder(spec.repo)})")
    xmr_dir = models_dir() / "clip" / spec.repo.replace("/", "--")
    config = _hf_cached(spec.repo, HF_CONFIG)
    weights = next((p for p in (_hf_cached(spec.repo, f) for f in res.hub_files) if p), None)
    if config is None or weights is None:  # a folder the user placed in xmr's models dir
        res.looked.append(str(xmr_dir))
        local = _first_file(xmr_dir, LOCAL_DIR_WEIGHTS)
        if (xmr_dir / HF_CONFIG).is_file() and local:
            config, weights, res.source = xmr_dir / HF_CONFIG, local, "xmr-cache"
    if config is not None:
        res.config_file = config
        res.model_cfg = _read_export_config(config)["model_cfg"]
        res.name = _match_builtin(res.model_cfg) or res.name
        res.missing_text = _text_assets_missing(res.model_cfg)
    res.checkpoint = weights if config is not None else None
    return res


def _first_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _resolve_local_dir(spec: ClipSpec) -> _Resolved:
    assert spec.path
    folder = spec.path
    res = _Resolved(spec, "local-dir", None, None, source="local-dir", looked=[str(folder)])
    if not folder.is_dir():
        res.problem = "folder not found" if not folder.exists() else "not a folder"
        return res
    config = folder / HF_CONFIG
    if not config.is_file():
        res.problem = f"no {HF_CONFIG} in the folder"
        return res
    res.config_file = config
    res.model_cfg = _read_export_config(config)["model_cfg"]
    res.name = _match_builtin(res.model_cfg) or folder.name
    res.checkpoint = _first_file(folder, LOCAL_DIR_WEIGHTS)
    has_tok = any((folder / f).is_file() for f in HF_TOKENIZER_FILES)
    res.missing_text = _text_assets_missing(res.model_cfg, tokenizer_in=folder if has_tok else None)
    return res


def _is_offline(settings: Settings) -> bool:
    return bool(settings.offline) or offline_mode()


def _missing_error(res: _Resolved, why: str) -> ModelMissing:
    spec = res.spec
    local = f"{spec.arch or 'ARCH'}:/path/to/weights"
    use_local = f"--clip-model {local} or XMR_CLIP_MODEL={local}"
    if spec.kind in ("tag", "hf-hub"):
        hint = (
            f"run `xmr models download` where there is network access (the Hugging Face cache "
            f"{hf_cache_dir()} can then be copied here), or use a local checkpoint: {use_local}"
        )
    else:
        hint = f"check the path, or choose the model with {use_local}"
    where = "; ".join(res.looked)
    return ModelMissing(f"CLIP model {spec.raw!r}: {why} (looked in {where})", hint=hint)


def _require_present(res: _Resolved, *, offline: bool) -> None:
    """Raise ModelMissing unless everything the model needs is on disk."""
    if res.problem:
        raise _missing_error(res, res.problem)
    if res.checkpoint is None:
        if res.spec.kind == "file":
            why = "weights file not found"
        elif res.spec.kind == "local-dir":
            why = f"no weights in the folder (expected one of {', '.join(LOCAL_DIR_WEIGHTS)})"
        else:
            why = "weights not found" + (" and offline mode is on" if offline else "")
        raise _missing_error(res, why)
    if res.missing_text:
        why = (
            f"its text tower needs the Hugging Face model(s) {', '.join(res.missing_text)} "
            f"(configuration and tokenizer), which are not in the cache"
            + (" and offline mode is on" if offline else "")
        )
        raise _missing_error(res, why)


# -------------------------------------------------------------------- downloads


def _fetch(res: _Resolved) -> None:
    """Download what is missing into the Hugging Face cache, or raise ModelMissing fast."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError

    cache = str(hf_cache_dir())

    def exists(repo: str, name: str) -> bool:
        # one quick request without retries, so a machine without network fails
        # in seconds instead of huggingface_hub's minute of retrying
        try:
            get_hf_file_metadata(hf_hub_url(repo, name), timeout=PROBE_TIMEOUT_S)
            return True
        except EntryNotFoundError:
            return False
        except GatedRepoError:
            why = f"{repo} is gated on the Hugging Face Hub (log in with `hf auth login`)"
            raise _missing_error(res, why) from None
        except RepositoryNotFoundError:
            raise _missing_error(res, f"repository {repo} not found on the Hugging Face Hub") from None
        except Exception as exc:
            raise _missing_error(res, f"not available locally and the download failed ({_short(exc)})") from None

    if res.checkpoint is None:
        if not res.hub_repo:
            raise _missing_error(res, "weights not found and there is nowhere known to download them from")
        repo = res.hub_repo
        extra = [HF_CONFIG] if res.spec.kind == "hf-hub" else []
        for name in extra:
            if not exists(repo, name):
                raise _missing_error(res, f"{repo} has no {HF_CONFIG}: not an open_clip model")
        chosen = next((name for name in res.hub_files if exists(repo, name)), None)
        if chosen is None:
            raise _missing_error(res, f"none of {', '.join(res.hub_files)} exists in {repo}")
        try:
            for name in [*extra, chosen]:
                hf_hub_download(repo, name, cache_dir=cache)
        except Exception as exc:
            raise _missing_error(res, f"download of {repo}/{chosen} failed ({_short(exc)})") from None
    for repo in _resolve(res.spec).missing_text:
        exists(repo, "config.json")
        try:
            snapshot_download(repo, cache_dir=cache, allow_patterns=HF_TEXT_PATTERNS)
        except Exception as exc:
            why = f"download of the text tower's files from {repo} failed ({_short(exc)})"
            raise _missing_error(res, why) from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# ------------------------------------------------------------ library hygiene


@contextmanager
def _quiet() -> Iterator[None]:
    """Keep open_clip/transformers/torch chatter (root-logger warnings such as
    "initialized randomly" before we load the weights, deprecation warnings)
    away from the user while a model is built or a tokenizer runs."""
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


@contextmanager
def _hf_offline_env() -> Iterator[None]:
    """huggingface_hub (and transformers through it) strictly offline, reading
    the cache named by the environment *now*. Everything needed was resolved
    beforehand, so a network access here could only stall."""
    from huggingface_hub import constants

    saved = (constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE)
    constants.HF_HUB_OFFLINE = True
    constants.HF_HUB_CACHE = str(hf_cache_dir())
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE = saved


def _looks_missing(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, (OSError, FileNotFoundError)) and any(
        s in text for s in ("couldn't connect", "cached", "offline", "not find", "no such file", "does not appear")
    )


def _checkpoint_mismatch(exc: BaseException, arch: str) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = next(
        (ln for ln in lines if ln.startswith(("size mismatch", "Missing key", "Unexpected key"))),
        lines[-1] if lines else type(exc).__name__,
    )
    mismatches = sum(ln.startswith("size mismatch") for ln in lines)
    more = f" ({mismatches} tensors differ)" if mismatches > 1 else ""
    if len(detail) > 220:
        detail = detail[:217] + "..."
    return f"checkpoint does not fit the {arch} architecture{more}: {detail}"


@dataclass(frozen=True)
class Identity:
    """What names a configured CLIP model, found without torch: its resolved files, the
    model id vectors are recorded under at fp32, and the checkpoint's sha256."""

    resolved: _Resolved
    model_id: str
    sha256: str | None


def identity(settings: Settings) -> Identity:
    """Resolve the configured model (fetching it when online and missing) and name it.

    Raises ModelMissing as the encoder would, in milliseconds."""
    spec = parse_spec(settings.clip_model)
    offline = _is_offline(settings)
    res = _resolve(spec)
    downloadable = res.checkpoint is not None or spec.kind in ("tag", "hf-hub")
    if not res.present and not res.problem and downloadable and not offline:
        _fetch(res)
        res = _resolve(spec)
    _require_present(res, offline=offline)
    assert res.checkpoint is not None
    sha = file_sha256(res.checkpoint)
    if spec.kind == "tag":
        model_id = f"clip:{spec.arch}:{spec.tag}"
    elif spec.kind == "hf-hub":
        model_id = f"clip:hf-hub:{spec.repo}"
    else:
        model_id = f"clip:{res.name}:sha256:{sha[:16] if sha else 'unknown'}"
    return Identity(res, model_id, sha)


# ----------------------------------------------------------------- the encoder


class ClipEncoder:
    """OpenCLIP image + text encoder for the ``clip`` space."""

    space = SPACE
    modalities = frozenset({"image", "text"})

    def __init__(self, settings: Settings):
        from xmr.encoders.device import resolve_device, use_half

        self.settings = settings
        ident = identity(settings)  # before torch: a missing model fails in milliseconds
        res = ident.resolved
        assert res.checkpoint is not None

        device = resolve_device(settings.device)
        self._device = device
        self._half = use_half(device)
        self._model, self._tokenizer = self._build(res, device, self._half)
        self.precision = precision.on_device(settings.precision, device.type)

        cfg = self._model.visual.preprocess_cfg
        self._preprocessor = ImagePreprocessor.from_open_clip(cfg)
        final_cfg = res.model_cfg or {}
        self.dim = int(final_cfg.get("embed_dim") or self._probe_dim())
        self.batch_size = int(settings.batch_size or DEFAULT_BATCH.get(device.type, 32))
        self._context_length = int(getattr(self._tokenizer, "context_length", None) or 77)
        self._n_special = self._special_token_count()

        sha = ident.sha256
        model_id = precision.tag_model_id(ident.model_id, self.precision)
        pp = self._preprocessor.provenance()
        self.info = ModelInfo(
            model_id=model_id,
            space=SPACE,
            name=res.name,
            pretrained=res.pretrained,
            checkpoint_sha256=sha,
            dim=self.dim,
            preprocessing=pp,
        )
        self.checkpoint_path = res.checkpoint
        # int8: images run the ONNX Runtime int8 tower only (xmr.encoders.image_int8), so the image
        # tower stays fp32 here (it is what gets exported); text runs torch's int8
        self._int8_images = None
        if self.precision == "int8":
            from xmr.encoders.image_int8 import int8_images

            self._int8_images = int8_images(self)
        keep = ("visual",) if self._int8_images is not None else ()
        self._model = precision.apply(self._model, self.precision, exclude=keep)
        self._text_runner = ClipTextRunner(self._model)

    # -- construction

    @staticmethod
    def _build(res: _Resolved, device: Any, half: bool) -> tuple[Any, Any]:
        with _quiet(), _hf_offline_env():
            import open_clip

            spec = res.spec
            if spec.kind in ("tag", "file"):
                oc_name = spec.arch
            else:  # hf-hub exports are folders of the same layout once in the cache
                assert res.config_file is not None
                oc_name = f"local-dir:{res.config_file.parent}"
            try:
                model = open_clip.create_model(
                    oc_name,
                    pretrained=None,  # the weights are loaded below, from the file we resolved
                    load_weights=False,
                    precision="fp16" if half else "fp32",
                    device=device,
                    pretrained_image=False,
                    pretrained_text=False,
                    force_quick_gelu=res.quick_gelu,
                    force_preprocess_cfg=res.preprocess or None,
                )
            except Exception as exc:
                if _looks_missing(exc):
                    raise _missing_error(res, f"a file the architecture needs is missing ({_short(exc)})") from None
                raise ModelError(f"cannot build CLIP architecture {res.name}: {_short(exc)}") from None
            try:
                open_clip.load_checkpoint(model, str(res.checkpoint), strict=True, weights_only=True, device="cpu")
            except Exception as exc:
                text = str(exc)
                if "size mismatch" in text or "Missing key" in text or "Unexpected key" in text:
                    reason = _checkpoint_mismatch(exc, res.name)
                else:
                    reason = f"cannot read checkpoint: {_short(exc)}"
                hint = f"check the architecture in {OPTION_HINT}" if spec.kind == "file" else None
                raise ModelError(reason, path=res.checkpoint, hint=hint) from None
            model.eval()
            model.requires_grad_(False)
            # hf-hub: the tokenizer named in the export's config, as open_clip resolves it
            tok_name = f"hf-hub:{spec.repo}" if spec.kind == "hf-hub" and res.source == "hf-cache" else oc_name
            try:
                tokenizer = open_clip.get_tokenizer(tok_name)
            except Exception as exc:
                if _looks_missing(exc):
                    raise _missing_error(res, f"its tokenizer is not available ({_short(exc)})") from None
                raise ModelError(f"cannot create the tokenizer of {res.name}: {_short(exc)}") from None
        return model, tokenizer

    def _probe_dim(self) -> int:
        import torch

        with torch.inference_mode():
            tokens = self._tokenizer([""]).to(self._device)
            return int(self._model.encode_text(tokens).shape[-1])

    def _special_token_count(self) -> int:
        inner = getattr(self._tokenizer, "tokenizer", None)  # HF-backed tokenizers
        if inner is not None and callable(inner):
            try:
                return len(inner("", add_special_tokens=True)["input_ids"])
            except Exception:
                return 2
        return 2  # CLIP's SimpleTokenizer: start- and end-of-text

    # -- text

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes, without the special tokens."""
        tok = self._tokenizer
        inner = getattr(tok, "tokenizer", None)
        if inner is not None and callable(inner):
            cleaned = tok.clean_fn(text) if hasattr(tok, "clean_fn") else text
            return len(inner(cleaned, add_special_tokens=False)["input_ids"])
        return len(tok.encode(text))

    @property
    def max_text_tokens(self) -> int:
        return max(1, self._context_length - self._n_special)

    def split_text(self, text: str) -> list[Passage]:
        """Passages of normalise(text) that fit the 77-token context (incl. start/end tokens)."""
        limit = self.max_text_tokens
        with _quiet():
            return clip_passages(text, self.count_tokens, limit)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        import numpy as np
        import torch
        import torch.nn.functional as F

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        runner = self._text_runner
        with torch.inference_mode(), _quiet():
            tokens = self._tokenizer(list(texts))
            lengths = runner.lengths(tokens)

            def embed(idx: np.ndarray) -> np.ndarray:
                with precision.autocast(self.precision):
                    feats = runner.features(tokens[torch.from_numpy(idx)].to(self._device))
                return F.normalize(feats.float(), dim=-1).cpu().numpy()

            batches = length_batches(lengths, self.batch_size, int(tokens.shape[1]))
            return embed_sorted(len(texts), batches, embed, self.dim)

    # -- images

    def image_preprocessor(self) -> ImagePreprocessor:
        return self._preprocessor

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        import numpy as np
        import torch
        import torch.nn.functional as F

        arr = np.asarray(pixels, dtype=np.float32)
        h, w = self._preprocessor.size
        if arr.ndim != 4 or arr.shape[1:] != (3, h, w):
            raise ValueError(f"expected pixels of shape (n, 3, {h}, {w}), got {arr.shape}")
        if len(arr) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._int8_images is not None:
            from xmr.encoders.image_int8 import int8_embed

            return int8_embed(self._int8_images, arr)
        dtype = torch.float16 if self._half else torch.float32
        out = []
        with torch.inference_mode():
            for i in range(0, len(arr), self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(arr[i : i + self.batch_size]))
                with precision.autocast(self.precision):
                    feats = self._model.encode_image(batch.to(self._device, dtype=dtype))
                out.append(F.normalize(feats.float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    # -- model management (no torch)

    @classmethod
    def status(cls, settings: Settings) -> ModelStatus:
        spec = parse_spec(settings.clip_model)
        res = _resolve(spec)
        size = sha = None
        if res.checkpoint is not None:
            size = res.checkpoint.stat().st_size
            sha = file_sha256(res.checkpoint, compute=False)
        if res.present:
            detail = f"{res.name} weights ({res.checkpoint.name})"  # type: ignore[union-attr]
        else:
            try:
                _require_present(res, offline=_is_offline(settings))
                detail = "missing"
            except ModelMissing as exc:
                detail = str(exc)
        location = str(res.checkpoint) if res.checkpoint else "; ".join(res.looked)
        return ModelStatus(
            space=SPACE,
            spec=spec.raw,
            source=res.source,
            location=location,
            present=res.present,
            size_bytes=size,
            sha256=sha,
            detail=detail,
        )

    @classmethod
    def download(cls, settings: Settings) -> ModelStatus:
        spec = parse_spec(settings.clip_model)
        res = _resolve(spec)
        if not res.present:
            if res.problem or (spec.kind in ("file", "local-dir") and res.checkpoint is None):
                _require_present(res, offline=False)  # a local path: nothing to download
            if _is_offline(settings):
                raise _missing_error(res, "cannot download: offline mode is on (XMR_OFFLINE / HF_HUB_OFFLINE)")
            _fetch(res)
            _require_present(_resolve(spec), offline=False)
        return cls.status(settings)
