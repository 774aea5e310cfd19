"""A bridge between the clip and clap spaces, pivoting on text.

Images live only in the clip space and audio only in the clap space, but both
spaces embed text. A query vector in one space is compared with a vocabulary of
everyday concepts embedded in that space; the best-matching concepts, weighted
by how strongly they stand out, are re-expressed with the same concepts'
embeddings in the other space. The concepts that carried a query are reported.

The vocabulary is ``xmr/data/concepts.txt`` (over 1,000 things one can both see
and hear), extended by a user file (``--concepts FILE`` or ``XMR_CONCEPTS``: one
concept per line, ``#`` comments). Concept embeddings are computed once per
model and cached in the catalogue's ``concepts`` table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from xmr.errors import PathNotFound
from xmr.settings import env_flag

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


def concept_matrix(cat: Any, encoder: Any, concepts: Sequence[str], *, writable: bool = True) -> np.ndarray:
    """(n, dim) embeddings of ``concepts`` with ``encoder``; cached per model in the catalogue.

    A search opens the catalogue read-only and never writes: what it embeds here
    serves that search only (``xmr index`` caches the concepts once both spaces
    hold vectors).
    """
    model_id = encoder.info.model_id
    cached = cat.concept_vectors(model_id)
    missing = [c for c in concepts if c not in cached]
    if missing:
        vecs = np.asarray(encoder.embed_texts(list(missing)), dtype=np.float32)
        cached.update(zip(missing, vecs, strict=True))
        if writable and not getattr(cat, "readonly", False):
            with cat.transaction():
                cat.put_concept_vectors(model_id, missing, vecs)
    return np.stack([cached[c] for c in concepts]).astype(np.float32)


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
