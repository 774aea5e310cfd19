"""A bridge between the clip and clap spaces, pivoting on text.

Images live only in the clip space and audio only in the clap space, but both
spaces embed text. A query vector in one space is compared with a vocabulary of
everyday concepts embedded in that space; the best-matching concepts, weighted
by how strongly they stand out, are re-expressed with the same concepts'
embeddings in the other space. The concepts that carried a query are reported.

The vocabulary is ``xmr/data/concepts.txt`` (over 1,000 things one can both see
and hear), extended by a user file (``--concepts FILE`` or ``XMR_CONCEPTS``: one
concept per line, ``#`` comments). Concept embeddings are computed once per
model when a bridged route first needs them (not by ``xmr index``: most runs never
bridge), cached per model in xmr's models dir (``concepts.npz`` beside the query
towers, so any index with that model reuses them); ``IndexOptions.bridge_concepts``
also caches them in the catalogue's ``concepts`` table.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from xmr.errors import PathNotFound
from xmr.settings import env_flag

CONCEPTS_FILE = "concepts.npz"
TOP_CONCEPTS = 8
# softmax temperature over the concepts' z-scores: larger is sharper
SHARPNESS = 2.0


def _read_concepts(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def load_concepts(extra_file: str | os.PathLike[str] | None = None) -> list[str]:
    """Built-in concepts plus the user's, in order, without duplicates.

    ``XMR_CONCEPTS_ONLY=1`` drops the built-in list (a user vocabulary alone).
    """
    extra = extra_file or os.environ.get("XMR_CONCEPTS")
    concepts: list[str] = []
    if not (extra and env_flag("XMR_CONCEPTS_ONLY")):
        builtin = resources.files("xmr").joinpath("data/concepts.txt").read_text(encoding="utf-8")
        concepts = _read_concepts(builtin)
    if extra:
        path = Path(extra).expanduser()
        if not path.is_file():
            raise PathNotFound("concepts file not found", path=path)
        concepts += _read_concepts(path.read_text(encoding="utf-8", errors="replace"))
    seen: set[str] = set()
    out = []
    for c in concepts:
        key = c.lower()
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def concept_matrix(
    cat: Any,
    encoder: Any,
    concepts: Sequence[str],
    *,
    writable: bool = True,
    notify: Callable[[str], None] | None = None,
) -> np.ndarray:
    """(n, dim) embeddings of ``concepts`` with ``encoder``; cached per model in the models
    dir (and in the catalogue when it is open for writing: a search never writes it)."""
    model_id = encoder.info.model_id
    cached = cat.concept_vectors(model_id)
    missing = [c for c in concepts if c not in cached]
    if missing:
        cache_file = concepts_cache_file(encoder.info)
        on_disk = _read_cache(cache_file)
        cached.update((c, on_disk[c]) for c in missing if c in on_disk)
        missing = [c for c in concepts if c not in cached]
        if missing:
            if notify is not None:
                notify(f"embedding {len(missing)} bridge concepts with {model_id} (once per model)")
            vecs = np.asarray(encoder.embed_texts(list(missing)), dtype=np.float32)
            cached.update(zip(missing, vecs, strict=True))
            on_disk.update(zip(missing, vecs, strict=True))
            _write_cache(cache_file, on_disk)
            if writable and not getattr(cat, "readonly", False):
                with cat.transaction():
                    cat.put_concept_vectors(model_id, missing, vecs)
    return np.stack([cached[c] for c in concepts]).astype(np.float32)


def concepts_cache_file(info: Any) -> Path:
    """Where a model's concept vectors are kept: beside its query towers, keyed by model id and checkpoint."""
    from xmr.encoders.towers import model_dir

    return model_dir(info.model_id, getattr(info, "checkpoint_sha256", None)) / CONCEPTS_FILE


def _read_cache(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            names, vecs = [str(n) for n in data["names"]], np.asarray(data["vectors"], dtype=np.float32)
        if vecs.ndim != 2 or len(names) != len(vecs):
            return {}
        return dict(zip(names, vecs, strict=True))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # none yet, or damaged: embed again
        return {}


def _write_cache(path: Path, vectors: dict[str, np.ndarray]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".concepts-", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, names=np.array(list(vectors), dtype=str), vectors=np.stack(list(vectors.values())))
            os.replace(tmp, path)  # whole or not at all: a reader never sees half a file
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    except OSError:
        pass  # a models dir that cannot be written: the next bridged search embeds them again


def cached_concept_matrix(cat: Any, model_id: str, concepts: Sequence[str]) -> np.ndarray | None:
    """The cached matrix, or None when some concept has not been embedded by that model yet."""
    cached = cat.concept_vectors(model_id)
    if any(c not in cached for c in concepts):
        return None
    return np.stack([cached[c] for c in concepts]).astype(np.float32)


@dataclass(frozen=True)
class Bridged:
    vector: np.ndarray  # unit vector in the target space
    concepts: list[tuple[str, float]]  # (concept, weight), weights sum to 1


def bridge(
    query: np.ndarray,
    source_concepts: np.ndarray,
    target_concepts: np.ndarray,
    names: Sequence[str],
    *,
    top: int = TOP_CONCEPTS,
) -> Bridged:
    """Re-express a unit query vector of one space in the other through shared concepts."""
    sims = source_concepts @ np.asarray(query, dtype=np.float32)
    # z-scores make the weighting independent of each space's cosine scale
    z = (sims - sims.mean()) / (sims.std() + 1e-6)
    top = max(1, min(top, len(names)))
    best = np.argsort(-z, kind="stable")[:top]
    w = np.exp(SHARPNESS * (z[best] - z[best].max()))
    w /= w.sum()
    vec = (w[:, None] * target_concepts[best]).sum(axis=0)
    vec /= np.linalg.norm(vec) + 1e-12
    return Bridged(
        vector=vec.astype(np.float32), concepts=[(names[i], float(wi)) for i, wi in zip(best, w, strict=True)]
    )
