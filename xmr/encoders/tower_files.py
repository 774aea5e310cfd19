"""Exported query towers on disk: where each lives, how one is written, what was given up on.

The layer under :mod:`xmr.encoders.towers` (which runs them), :mod:`xmr.encoders.tower_export`
(which writes them from torch) and :mod:`xmr.encoders.tower_quant` (which derives the int8
variants): no torch, no ONNX Runtime, nothing of xmr but its paths and model info.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from xmr.encoders.base import ModelInfo
from xmr.paths import models_dir

FORMAT = 1
MAX_EXPORT_DIFF = 1e-5
TOWERS = {"clip": ("text", "image"), "clap": ("text", "audio")}
UNSUPPORTED_FILE = "unsupported.json"


class TowerUnsupported(Exception):
    """The query engine does not cover this model or tower; use the backend."""


def available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def onnx_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("onnxruntime")
    except Exception:
        return None


def towers_root() -> Path:
    return models_dir() / "towers"


def model_dir(model_id: str, sha256: str | None, *, root: Path | None = None) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)[:60]
    key = (sha256 or hashlib.sha256(model_id.encode()).hexdigest())[:16]
    return (root or towers_root()) / f"{slug}-{key}"


def tower_dir(model_id: str, sha256: str | None, tower: str, *, root: Path | None = None) -> Path:
    return model_dir(model_id, sha256, root=root) / tower


@contextlib.contextmanager
def staging(target: Path) -> Iterator[Path]:
    """A folder beside ``target`` to build a tower in. When the block ends without error it
    is made private and moved into place, so a half-written tower is never used; one that
    another process finished first is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        for p in tmp.iterdir():
            os.chmod(p, 0o600)
        os.chmod(tmp, 0o700)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unsupported_reason(info: ModelInfo, *, root: Path | None = None) -> str | None:
    """Why an earlier export gave up on this model (remembered so it is not retried every query)."""
    f = model_dir(info.model_id, info.checkpoint_sha256, root=root) / UNSUPPORTED_FILE
    try:
        return str(json.loads(f.read_text(encoding="utf-8")).get("reason") or "unsupported")
    except (OSError, ValueError):
        return None


def remember_unsupported(info: ModelInfo, reason: str, *, root: Path | None = None) -> None:
    folder = model_dir(info.model_id, info.checkpoint_sha256, root=root)
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / UNSUPPORTED_FILE).write_text(json.dumps({"reason": reason}), encoding="utf-8")
