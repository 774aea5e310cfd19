"""Where xmr keeps things. The only module that decides locations.

Index directory precedence: explicit ``--index DIR`` > ``XMR_HOME`` > the
per-user data dir from platformdirs. Model weights downloaded by xmr go to
``XMR_MODELS_DIR`` or the per-user cache dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "xmr"
CATALOGUE_NAME = "catalogue.db"
ANN_DIR_NAME = "ann"


def index_dir(override: str | os.PathLike[str] | None = None) -> Path:
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get("XMR_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def catalogue_path(index: Path) -> Path:
    return index / CATALOGUE_NAME


def ann_dir(index: Path) -> Path:
    return index / ANN_DIR_NAME


def models_dir() -> Path:
    env = os.environ.get("XMR_MODELS_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_cache_dir(APP, appauthor=False)) / "models"
