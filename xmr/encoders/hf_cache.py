"""The one resolver of the Hugging Face hub cache, shared by every backend.

The cache location is read from the environment *now*: huggingface_hub reads
it once at import, which would ignore a later change (tests, or a caller that
sets ``HF_HOME`` after importing). Looking a file up never touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path


def hub_cache_dir() -> Path:
    """``HF_HUB_CACHE`` (or the older ``HUGGINGFACE_HUB_CACHE``), else ``$HF_HOME/hub``,
    else ``$XDG_CACHE_HOME/huggingface/hub`` (default ``~/.cache/huggingface/hub``)."""
    env = os.environ
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return Path(os.path.expandvars(os.path.expanduser(env[name])))
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def repo_folder(repo: str) -> Path:
    """Where the cache keeps a model repository (it may not exist)."""
    return hub_cache_dir() / ("models--" + repo.replace("/", "--"))


def cached_file(repo: str, filename: str) -> Path | None:
    """A file of ``repo`` already in the cache, or None (malformed entries count as absent)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, filename, cache_dir=str(hub_cache_dir()))
    except Exception:
        return None
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None
