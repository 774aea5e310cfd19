"""The groups one query searches: per (space, segment kind), its candidates, its calibration
against the group's background and its vector-index search, with the answer cache in front.

Raw cosines of different spaces, and of different kinds inside a space (CLIP text-text sits far
above text-image), are not comparable: each group's scores are calibrated against that group's
background distribution for this query (:mod:`xmr.calibrate`). Routes through the bridge are
weaker evidence (``BRIDGE_DISCOUNT``); a direct hit identical to the query ranks as identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xmr import media, paths
from xmr.errors import NoIndex
from xmr.query import QueryPart
from xmr.query_cache import cache_dir
from xmr.retrieval.types import SearchOptions, SegmentHit, WarmContext
from xmr.spaces import SPACES

BRIDGE_DISCOUNT = 0.5
# A direct hit this close to the query vector is the query's own content (the
# same file, or a copy): it ranks as identical, whatever a small group's
# background would allow its calibrated score to reach.
IDENTICAL_COSINE = 0.9999
IDENTICAL_SCORE = 10.0


@dataclass
class GroupPlan:
    """One (space, segment kind) group to search for one query."""

    space: str
    model_id: str
    kind: str
    q: np.ndarray
    store: Any
    candidates: np.ndarray | None
    n_candidates: int
    calibrators: list[Any]
    bridged: bool
    floor: float = float("inf")  # the highest of the query rows' lowest fetched scores


def background(cat: Any, space: str, model_id: str, kind: str, n: int, group_ids: np.ndarray) -> np.ndarray:
    """The calibration background of one group, from the state cache when this generation has it."""
    from xmr.calibrate import background_sample

    return cat.cached(
        f"background\0{space}\0{model_id}\0{kind}\0{n}",
        lambda: background_sample(
            cat, space, model_id, n=n, ids=group_ids, cache_dir=cache_dir(cat.index_dir) / "calibration"
        ),
    )


class GroupSearch:
    """Plans and searches the groups of one query.

    ``cat`` is the catalogue as a ``CachedSource``; ``under`` the absolute folders a result
    must be in; ``selection`` the files the metadata filters let through (None: no filter);
    ``embeddings`` the query cache, whose answers a repeated query reuses.
    """

    def __init__(
        self,
        cat: Any,
        parts: list[QueryPart],
        options: SearchOptions,
        under: list[str],
        selection: Any = None,
        embeddings: Any = None,
        warm: WarmContext | None = None,
    ) -> None:
        self.cat = cat
        self.parts = parts
        self.options = options
        self.under = under
        self.selection = selection
        self.embeddings = embeddings
        self.warm = warm

    def groups(self) -> list[tuple[str, str, str, int]]:
        """(space, model_id, kind, count) of every group the query may search."""
        types = set(self.options.types) or set(media.names())
        groups = media.groups()
        out, total = [], 0
        for space in SPACES:
            model_id = self.cat.active_model(space)
            if not model_id:
                continue
            for kind, n in sorted(self.cat.segment_kinds(space, model_id).items()):
                total += n
                if types.intersection(groups.get((space, kind), ())) and n:
                    out.append((space, model_id, kind, n))
        if total == 0:
            raise NoIndex("the index is empty", hint="run 'xmr index PATH' first")
        if not out:
            wanted = ", ".join(sorted(types))
            raise NoIndex(f"nothing of type {wanted} is indexed")
        return out

    def plan_space(
        self,
        space: str,
        model_id: str,
        q: np.ndarray,
        bridged: bool,
        groups: list[tuple[str, str, str, int]],
        searched: list[dict[str, Any]],
    ) -> list[GroupPlan]:
        """The plans of ``space``'s groups for the query rows ``q``; ``searched`` gets one entry per group."""
        from xmr.calibrate import fit_calibrators
        from xmr.store import index_backend, open_index

        if self.warm is not None:
            store = self.warm.store(space, model_id, q.shape[1])
        else:
            # one query in this process: scanning the mapped file beats loading the graph
            store = open_index(
                index_backend(self.cat),
                paths.ann_dir(self.cat.index_dir),
                self.cat,
                space,
                model_id,
                q.shape[1],
                readonly=True,
                mapped=True,
            )
        space_total = self.cat.vector_count(space, model_id)
        plans = []
        for g_space, _model, kind, n in groups:
            if g_space != space:
                continue
            group_ids = self.cat.group_vector_ids(space, model_id, kind)
            cand = self.cat.group_vector_ids(space, model_id, kind, under=self.under) if self.under else group_ids
            if self.selection is not None:  # the filters' files become the index's candidates
                cand = np.intersect1d(cand, self.cat.vector_ids_of(space, model_id, kind, self.selection.hashes))
            searched.append({"space": space, "kind": kind, "vectors": int(n), "candidates": int(len(cand))})
            if not len(cand):
                continue
            only_group = len(group_ids) == space_total
            bg = background(self.cat, space, model_id, kind, self.options.background, group_ids)
            unfiltered = only_group and not self.under and self.selection is None
            plans.append(
                GroupPlan(
                    space,
                    model_id,
                    kind,
                    q,
                    store,
                    None if unfiltered else cand,
                    len(cand),
                    fit_calibrators(q, bg),
                    bridged,
                )
            )
        return plans

    def answer_key(self, plan: GroupPlan, k_fetch: int) -> str | None:
        """The answer cache's key for one group search (None: not cacheable here)."""
        generation = getattr(getattr(self.cat, "state", None), "generation", None)
        # --under: the candidates come from the files table, which can change (a copy of indexed
        # content into the folder) without changing the vector generation
        if (
            self.embeddings is None
            or generation is None
            or self.under
            or self.selection is not None  # candidates from the files' metadata, which can change alone
            or plan.n_candidates < 0  # a keyword match's own scores (ranking.with_keywords)
            or not all(p.cacheable for p in self.parts)
        ):
            return None
        import hashlib
        import json

        from xmr import __version__

        h = hashlib.blake2b(digest_size=20)
        # changes with every checkpoint of the vector index and any write to its files
        fingerprint = plan.store.fingerprint()
        head = [list(generation), fingerprint, plan.space, plan.model_id, plan.kind, k_fetch, self.options.exact]
        head.append(__version__)  # another version's answers are not reused
        h.update(json.dumps(head, sort_keys=True, default=str).encode())
        h.update(np.ascontiguousarray(plan.q, dtype="<f4").tobytes())
        return h.hexdigest()

    def hits(self, plan: GroupPlan, k_fetch: int) -> list[SegmentHit]:
        """The group's best ``k_fetch`` segments per query row, calibrated."""
        key = self.answer_key(plan, k_fetch)
        cached = self.embeddings.get_answer(key) if key else None
        if cached is not None:
            ids, sims = cached
        else:
            search_fn = plan.store.exact_search if self.options.exact else plan.store.search
            cand, where = plan.candidates, {}
            if cand is not None and not self.under and "kind" in getattr(plan.store, "filters", ()):
                cand, where = None, {"kind": plan.kind}  # the backend filters by kind itself (Milvus)
            ids, sims = search_fn(plan.q, k_fetch, candidate_ids=cand, **where)
            if key and not plan.store.fallback():
                self.embeddings.put_answer(key, np.asarray(ids), np.asarray(sims))
        route = "bridge" if plan.bridged else "direct"
        discount = BRIDGE_DISCOUNT if plan.bridged else 1.0
        out = []
        plan.floor = float("-inf")
        # each query row is calibrated against its own background distribution
        for row_ids, row_sims, cal in zip(ids, sims, plan.calibrators, strict=True):
            z = np.asarray(cal.calibrate(row_sims)) * discount
            if not plan.bridged:
                z = np.where(row_sims >= IDENTICAL_COSINE, np.maximum(z, IDENTICAL_SCORE), z)
            if len(z):
                plan.floor = max(plan.floor, float(z.min()))
            for vid, raw, score in zip(row_ids.tolist(), row_sims.tolist(), z.tolist(), strict=True):
                out.append(SegmentHit(plan.space, plan.model_id, plan.kind, route, int(vid), float(raw), float(score)))
        return out
