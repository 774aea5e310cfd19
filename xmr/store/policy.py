"""Which vector index backend an index run checkpoints with: ``--codes binary|none|auto``.

``binary`` keeps 1-bit codes and a flat float32 file (``xmr.store.binary``),
``none`` the hnswlib graph. ``auto`` (the default) uses the codes once a space
holds ``AUTO_CODES_MIN`` vectors: an HNSW graph is the faster warm search, but
past a few million vectors it no longer fits a laptop's memory (2.2 KB a
512-d vector, loaded whole by ``xmr serve``), takes most of an hour to build on
two cores, and a fresh ``xmr search`` scans all the float32 vectors instead
(docs/codes.md has the measurements). A choice given to ``xmr index`` (or
XMR_CODES) is recorded in the catalogue's settings and kept by later runs that
give none. A catalogue recording a backend other than these two (a plugin's) is
left to it unless ``binary`` or ``none`` is asked for.
"""

from __future__ import annotations

import os
from typing import Any

from xmr.errors import UsageError
from xmr.store.factory import BACKEND_SETTING, DEFAULT_BACKEND, index_backend

CODES_SETTING = "vector_codes"
CODES_CHOICES = ("binary", "none", "auto")
CODES_BACKEND = "binary"
# live vectors in one space from which ``auto`` uses the codes (docs/codes.md)
AUTO_CODES_MIN = 2_000_000


def check_codes(value: str | None) -> str | None:
    """The choice, lower-cased, or None; UsageError for anything else."""
    if value is None or not value.strip():
        return None
    v = value.strip().lower()
    if v not in CODES_CHOICES:
        raise UsageError(f"--codes / XMR_CODES: {value!r} is not one of {', '.join(CODES_CHOICES)}")
    return v


def codes_from_env() -> str | None:
    return check_codes(os.environ.get("XMR_CODES"))


def choose_backend(cat: Any, requested: str | None, spaces: Any = ("clip", "clap")) -> str:
    """The backend to checkpoint with, recorded (with an explicit choice) in the settings.

    ``cat`` is the writer's catalogue (``get_setting``, ``set_setting``,
    ``transaction``, ``active_model``, ``vector_count``)."""
    choice = check_codes(requested) or check_codes(cat.get_setting(CODES_SETTING)) or "auto"
    recorded = cat.get_setting(BACKEND_SETTING)
    current = index_backend(cat)
    if choice == "binary":
        backend = CODES_BACKEND
    elif choice == "none":
        backend = DEFAULT_BACKEND
    elif current not in (DEFAULT_BACKEND, CODES_BACKEND):
        backend = current  # a plugin's backend: auto does not switch away from it
    else:
        largest = 0
        for space in spaces:
            model_id = cat.active_model(space)
            if model_id:
                largest = max(largest, int(cat.vector_count(space, model_id)))
        backend = CODES_BACKEND if largest >= AUTO_CODES_MIN else DEFAULT_BACKEND
    wanted = {BACKEND_SETTING: backend}
    if requested:
        wanted[CODES_SETTING] = choice
    if recorded != backend or (requested and cat.get_setting(CODES_SETTING) != choice):
        with cat.transaction():
            for key, value in wanted.items():
                cat.set_setting(key, value)
    return backend


def codes_status(cat: Any) -> dict[str, Any]:
    """What ``xmr status`` says about the codes: the backend in use, the choice, the threshold."""
    backend = index_backend(cat)
    return {
        "backend": backend,
        "codes": "binary" if backend == CODES_BACKEND else "none",
        "choice": check_codes(cat.get_setting(CODES_SETTING)) or "auto",
        "auto_min_vectors": AUTO_CODES_MIN,
    }
