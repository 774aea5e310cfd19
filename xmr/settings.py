"""Run-time settings resolved from options and environment variables.

Every option has an environment variable; an explicit option wins. Resolving
settings imports nothing heavy: only the space vocabulary (xmr.spaces) and the
precision names (xmr.encoders.precision), both below it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from xmr.encoders.precision import check
from xmr.spaces import CLAP, CLIP, INFO, SPACES

DEFAULT_CLIP_MODEL = CLIP.default_model
DEFAULT_CLAP_MODEL = CLAP.default_model


TRUTHY = frozenset({"1", "true", "yes", "on"})


def env_flag(name: str) -> bool:
    """The one rule for on/off environment variables: 1, true, yes or on (any case) is on;
    anything else, or unset, is off."""
    return os.environ.get(name, "").strip().lower() in TRUTHY


def offline_mode() -> bool:
    """True when nothing may touch the network (xmr's or Hugging Face's variables)."""
    return any(env_flag(name) for name in ("XMR_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def absolute_spec(spec: str) -> str:
    """Make a model spec that names a local file or folder absolute.

    The spec is stored in the catalogue and reused by later searches, which may
    run from another working directory.
    """
    if spec.startswith("local-dir:"):
        return "local-dir:" + os.path.abspath(os.path.expanduser(spec[len("local-dir:") :]))
    if os.path.exists(os.path.expanduser(spec)):
        return os.path.abspath(os.path.expanduser(spec))
    arch, sep, rest = spec.partition(":")
    if sep and rest and not rest.startswith("/") and os.path.exists(os.path.expanduser(rest)):
        return f"{arch}:{os.path.abspath(os.path.expanduser(rest))}"
    return spec


@dataclass
class Settings:
    device: str = "auto"  # auto|cpu|cuda|mps (cuda:N accepted)
    clip_model: str = DEFAULT_CLIP_MODEL
    clap_model: str = DEFAULT_CLAP_MODEL
    batch_size: int | None = None  # None: the backend chooses for the device
    offline: bool = False
    query_engine: str = "onnx"  # onnx (per-tower ONNX Runtime) | torch (the backends)
    index_engine: str = "onnx"  # onnx (CLIP's image tower in ONNX Runtime when exported) | torch
    # fp32|bf16|int8 on CPU (xmr.encoders.precision); None: fp32 to index, the index's own to search
    precision: str | None = None
    # extra extensions read as plain-text documents (XMR_TEXT_EXT, comma-separated; --text-ext)
    text_extensions: tuple[str, ...] = ()
    # space name -> "module:factory"; lets a custom backend replace a built-in one
    backends: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        s = cls(
            device=env.get("XMR_DEVICE", "auto"),
            clip_model=env.get(CLIP.model_env, DEFAULT_CLIP_MODEL),
            clap_model=env.get(CLAP.model_env, DEFAULT_CLAP_MODEL),
            batch_size=int(env["XMR_BATCH_SIZE"]) if env.get("XMR_BATCH_SIZE") else None,
            offline=offline_mode(),
            query_engine=env.get("XMR_QUERY_ENGINE", "onnx"),
            index_engine=env.get("XMR_INDEX_ENGINE", "onnx"),
            precision=env.get("XMR_PRECISION") or None,
            text_extensions=tuple(e.strip() for e in env.get("XMR_TEXT_EXT", "").split(",") if e.strip()),
        )
        for space in SPACES:
            spec = env.get(INFO[space].backend_env)
            if spec:
                s.backends[space] = spec
        for key, value in overrides.items():
            if value is not None:
                setattr(s, key, value)
        s.precision = check(s.precision)
        for info in INFO.values():
            setattr(s, info.model_setting, absolute_spec(getattr(s, info.model_setting)))
        return s
