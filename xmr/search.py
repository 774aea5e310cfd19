"""``xmr search``: any-to-any queries over the index, one calibrated ranked list.

Each query part (text, image, audio, text file; weighted, possibly negative) is
embedded in every space the index holds: directly where the part's modality has
an encoder there (text and text files in both spaces, images in clip, audio in
clap), otherwise through the text bridge (:mod:`xmr.bridge`). The parts' vectors
are summed with their weights into one query vector per space.

Raw cosines of different spaces — and of different kinds inside a space (CLIP
text↔text sits far above text↔image) — are not comparable, so results are
searched per *group* (space × segment kind: clip/image, clip/text, clap/audio,
clap/text) and each group's scores are calibrated against that group's
background distribution for this query (:mod:`xmr.calibrate`): the score is a
z-like number, "how unusual is this similarity among unrelated items of the same
kind". Routes that went through the bridge are weaker evidence and their score
is scaled by ``BRIDGE_DISCOUNT``; a direct hit identical to the query (cosine
≥ ``IDENTICAL_COSINE``) ranks as identical content. Hits of several segments (audio windows, text
passages) or spaces collapse into one result per file, best segment first.

The steps live in :mod:`xmr.retrieval` (types, query vectors, groups, ranking); this module
puts them together.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xmr import media, paths
from xmr.catalogue import Catalogue
from xmr.encoders.query import QueryEncoders
from xmr.errors import UsageError
from xmr.query import QueryPart
from xmr.query_cache import CachedSource
from xmr.retrieval.embed import QueryVectors
from xmr.retrieval.groups import BRIDGE_DISCOUNT, IDENTICAL_COSINE, IDENTICAL_SCORE, GroupPlan, GroupSearch, background
from xmr.retrieval.ranking import Ranking
from xmr.retrieval.types import (
    SCHEMA_ID,
    Result,
    Route,
    SearchOptions,
    SearchResponse,
    SegmentHit,
    WarmContext,
)
from xmr.settings import Settings
from xmr.snippets import fill_snippets
from xmr.spaces import SPACES

__all__ = [
    "BRIDGE_DISCOUNT",
    "IDENTICAL_COSINE",
    "IDENTICAL_SCORE",
    "SCHEMA_ID",
    "Result",
    "Route",
    "SearchOptions",
    "SearchResponse",
    "SegmentHit",
    "WarmContext",
    "prepare_state",
    "search",
]


def search(
    parts: Sequence[QueryPart],
    *,
    index_dir: Path | None = None,
    settings: Settings | None = None,
    options: SearchOptions | None = None,
    notify: Callable[[str], None] | None = None,
    warm: WarmContext | None = None,
) -> SearchResponse:
    """Run one query against the index; see the module docstring.

    ``notify`` receives one-line notices (a one-time model preparation, a
    damaged ANN file answered exactly); the library never prints.
    ``warm``: reuse a long-lived catalogue, caches, vector stores and encoders
    (``index_dir`` is then the one ``warm`` was opened on).
    """
    t0 = time.perf_counter()
    settings = settings or Settings.from_env()
    options = options or SearchOptions()
    index_dir = index_dir or paths.index_dir()
    if options.k < 1:
        raise UsageError("-k/--top must be at least 1")
    if options.sort not in ("score", "date") or options.match not in ("both", "semantic", "keyword"):
        raise UsageError("--sort takes score or date; match: both, semantic or keyword")
    bad = set(options.types) - set(media.names())
    if bad:
        raise UsageError(f"unknown type {sorted(bad)[0]!r}; choose from {', '.join(media.names())}")
    parts = list(parts)
    if not parts:
        raise UsageError("empty query")
    if warm is not None:
        return _Search(warm.catalogue, parts, settings, options, notify, warm.embeddings, warm).run(t0)
    from xmr.query_cache import EmbeddingCache, StateCache

    with Catalogue.open(index_dir, readonly=True) as cat:
        source = CachedSource(cat, StateCache(index_dir, cat.generation()))
        embeddings = EmbeddingCache(index_dir) if options.query_cache else None
        try:
            return _Search(source, parts, settings, options, notify, embeddings).run(t0)  # type: ignore[arg-type]
        finally:
            if embeddings is not None:
                embeddings.close()


def prepare_state(cat: Catalogue, index_dir: Path) -> None:
    """Derive now what the first search of this catalogue generation would derive in O(N):
    the live and per-kind vector ids, the kind counts and the calibration backgrounds, into
    the state cache. Called by writers (``xmr index``) after their last commit; a cache that
    cannot be written is skipped, like every cache."""
    from xmr.query_cache import StateCache

    state = StateCache(index_dir, cat.generation())
    source = CachedSource(cat, state)
    for space in SPACES:
        model_id = cat.active_model(space)
        if not model_id:
            continue
        source.live_vector_ids(space, model_id)
        for kind, n in sorted(source.segment_kinds(space, model_id).items()):
            if n:
                group_ids = source.group_vector_ids(space, model_id, kind)
                background(source, space, model_id, kind, SearchOptions.background, group_ids)
    state.drop_older()


class _Search:
    """One query: its vectors per space, the groups searched, the hits ranked into files."""

    def __init__(
        self,
        cat: CachedSource,
        parts: list[QueryPart],
        settings: Settings,
        options: SearchOptions,
        notify: Callable[[str], None] | None = None,
        embeddings: Any = None,
        warm: WarmContext | None = None,
    ):
        self.cat = cat
        self.parts = parts
        self.options = options
        self.notify = notify
        self.encoders = warm.encoders(settings) if warm is not None else QueryEncoders(cat, settings, notify)
        self.vectors = QueryVectors(cat, parts, self.encoders, embeddings, options.concepts_file, notify)
        # as the indexer stores them: absolute, symlinks not resolved
        under = [os.path.abspath(os.path.expanduser(u)) for u in options.under]
        selection = None  # xmr.filters.Selection: the files the metadata filters let through
        if options.filters is not None and options.filters.active:
            from xmr.filters import select

            selection = select(self.cat.meta_rows(), options.filters)
        self.groups = GroupSearch(cat, parts, options, under, selection, embeddings, warm)
        self.ranking = Ranking(cat, parts, options, self.groups)

    def run(self, t0: float) -> SearchResponse:
        groups = self.groups.groups()
        opts = self.options
        routes: list[Route] = []
        searched: list[dict[str, Any]] = []
        part_vectors: dict[str, list[dict[str, Any]]] = {}
        plans: list[GroupPlan] = []
        for space in sorted({g[0] for g in groups}):
            q, info = self.vectors.in_space(space)
            part_vectors[space] = info
            model_id = next(g[1] for g in groups if g[0] == space)
            routes.append(Route(space, model_id, [{k: v for k, v in d.items() if k != "vector"} for d in info]))
            if q is None:
                continue
            bridged = all(d["route"] == "bridge" for d in info if d["weight"] > 0)
            plans += self.groups.plan_space(space, model_id, q, bridged, groups, searched)
        # results collapse per file: fetch more segments until k files are found or groups run dry
        k_fetch = max(50, opts.k * 5)
        while True:
            results = self.ranking.collapse([h for plan in plans for h in self.groups.hits(plan, k_fetch)])
            if len(results) >= opts.k or all(k_fetch >= plan.n_candidates for plan in plans):
                break
            # with --min-score, a group whose every query row already fetched a hit below the
            # threshold has nothing more to give (scores fall with rank): stop instead of growing k to N
            if opts.min_score is not None and all(
                k_fetch >= plan.n_candidates or plan.floor < opts.min_score for plan in plans
            ):
                break
            k_fetch *= 4
        if opts.match != "semantic":
            results = self.ranking.with_keywords(results, plans)
        results = results[: opts.k]
        if opts.sort == "date":
            self.ranking.sort_by_date(results)
        fill_snippets(self.cat, results, all_segments=opts.all_segments)
        if self.notify is not None:
            for plan in {id(p.store): p for p in plans}.values():
                if plan.store.fallback():
                    self.notify(
                        f"the {plan.space} vector index is unusable ({plan.store.fallback()}); searching exactly "
                        "until 'xmr index' rebuilds it"
                    )
        self.ranking.explain(results, part_vectors)
        return SearchResponse(
            query=self.parts,
            results=results,
            routes=routes,
            elapsed_s=time.perf_counter() - t0,
            searched=searched,
            notes=list(self.encoders.notes),
            embed_s=self.vectors.embed_s,
        )
