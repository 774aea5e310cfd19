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
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from xmr import media, paths
from xmr.catalogue import Catalogue, SegmentRef, path_key
from xmr.encoders.query import QueryEncoders
from xmr.errors import MediaError, NoIndex, UsageError
from xmr.query import QueryPart
from xmr.query_cache import CachedSource, cache_dir
from xmr.settings import Settings
from xmr.snippets import fill_snippets, shorten
from xmr.spaces import SPACES

# Which modalities a (space, segment kind) group holds (media.groups()), which spaces embed a
# query kind natively (media.query_kinds()) and the result types (media.names()) come from the
# media kinds (xmr.media): a registered kind takes part without a change here.
OTHER_SPACE = {"clip": "clap", "clap": "clip"}
BRIDGE_DISCOUNT = 0.5
# A direct hit this close to the query vector is the query's own content (the
# same file, or a copy): it ranks as identical, whatever a small group's
# background would allow its calibrated score to reach.
IDENTICAL_COSINE = 0.9999
IDENTICAL_SCORE = 10.0
SCHEMA_ID = "xmr-search/1"  # bump on any incompatible change of the JSON output (xmr/data/search.schema.json)


@dataclass
class SearchOptions:
    k: int = 10
    types: Sequence[str] = ()  # restrict to these file modalities (empty: all)
    under: Sequence[str] = ()  # restrict to files under these folders
    min_score: float | None = None  # on the calibrated score
    all_segments: bool = False
    exact: bool = False  # brute force instead of the ANN index
    concepts_file: str | None = None
    background: int = 2048
    filters: Any = None  # xmr.filters.Filters: metadata filters, applied inside the vector search
    sort: str = "score"  # score | date: the top k by score, newest first (date taken, else modified)
    match: str = "both"  # both | semantic | keyword: which rankings are fused (xmr.fusion)
    keyword_text: str | None = None  # the keyword side's query (quoted phrases kept); None: the text parts


@dataclass
class SegmentHit:
    space: str
    model_id: str
    kind: str
    route: str  # direct | bridge
    vector_id: int
    raw: float  # cosine similarity in its space
    score: float  # calibrated (and discounted when bridged)
    start_s: float | None = None
    end_s: float | None = None
    char_start: int | None = None
    char_end: int | None = None
    snippet: str | None = None
    snippet_note: str | None = None  # why no snippet is shown ("changed since indexing")
    page: int | None = None  # PDF page of the passage
    origin: str | None = None  # a passage not of the file's own text: "ocr" (recognised in its pixels)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if v is not None}
        d["raw"] = round(self.raw, 6)
        d["score"] = round(self.score, 4)
        return d


@dataclass
class Result:
    path: str
    modality: str
    score: float
    best: SegmentHit
    segments: list[SegmentHit] = field(default_factory=list)
    contributions: list[dict[str, Any]] = field(default_factory=list)
    raw_path: bytes | None = None  # the exact file-system name when ``path`` had to be escaped
    keyword: dict[str, Any] | None = None  # the keyword match (bm25, its score), when there is one
    semantic_score: float | None = None  # the score before the keyword part was added
    date: str | None = None  # with --sort date: date taken, else modified

    @property
    def path_bytes(self) -> bytes:
        """The name to hand to other programs (``--paths``, ``-0``): exact, even when not UTF-8."""
        return self.raw_path if self.raw_path is not None else os.fsencode(self.path)

    def as_dict(self, *, explain: bool = False, all_segments: bool = False) -> dict[str, Any]:
        b = self.best
        d: dict[str, Any] = {
            "path": self.path,
            "modality": self.modality,
            "score": round(self.score, 4),
            "space": b.space,
            "raw": round(b.raw, 6),
        }
        if b.start_s is not None:
            d["start_s"], d["end_s"] = round(b.start_s, 3), round(b.end_s or 0.0, 3)
        if b.snippet is not None:
            d["snippet"], d["char_start"], d["char_end"] = b.snippet, b.char_start, b.char_end
        elif b.char_start is not None:
            d["char_start"], d["char_end"], d["snippet_note"] = b.char_start, b.char_end, b.snippet_note
        if b.page is not None:
            d["page"] = b.page
        if self.date is not None:
            d["date"] = self.date
        if explain:
            d["explain"] = {
                "model_id": b.model_id,
                "route": b.route,
                "segment_kind": b.kind,
                **_timed_segment(self.modality, b.kind),
                **({"segment": b.origin} if b.origin else {}),
                "vector_id": b.vector_id,
                "contributions": self.contributions,
                "semantic_score": round(self.semantic_score if self.semantic_score is not None else self.score, 4),
                "keyword": self.keyword,
            }
        if all_segments:
            d["segments"] = [s.as_dict() for s in self.segments]
        return d


def _timed_segment(modality: str, segment_kind: str) -> dict[str, str]:
    """A timed kind's hit (video): whether it came from a frame or from the sound."""
    kind = media.find(modality)
    if kind is None or not kind.extra.get("timed"):
        return {}
    return {"segment": "frame" if segment_kind == media.IMAGE_SEGMENT else "sound"}


@dataclass
class _GroupPlan:
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


@dataclass
class Route:
    space: str
    model_id: str
    parts: list[dict[str, Any]]  # per part: label, weight, route, bridge concepts


@dataclass
class SearchResponse:
    query: list[QueryPart]
    results: list[Result]
    routes: list[Route]
    elapsed_s: float
    searched: list[dict[str, Any]]  # per group: space, kind, vectors, candidates
    notes: list[str] = field(default_factory=list)  # e.g. a query embedded at another precision than the index
    embed_s: float = 0.0  # of elapsed_s: time spent embedding the query (and bridge concepts not cached)

    def as_dict(self, *, explain: bool = False, all_segments: bool = False) -> dict[str, Any]:
        return {
            "schema": SCHEMA_ID,
            "query": [{"kind": p.kind, "value": path_key(p.value)[0], "weight": p.weight} for p in self.query],
            "results": [r.as_dict(explain=explain, all_segments=all_segments) for r in self.results],
            "routes": [r.__dict__ for r in self.routes] if explain else None,
            "searched": self.searched if explain else None,
            "notes": self.notes if explain else None,
            "elapsed_s": round(self.elapsed_s, 3),
        }


class WarmContext(Protocol):
    """State a long-lived caller (``xmr serve``) keeps between searches.

    ``catalogue`` is the open catalogue as a ``CachedSource`` of its current
    generation, ``embeddings`` the query-embedding cache, ``store`` returns the
    already opened vector store of a space and ``encoders`` the lazily loading
    query encoders, so a search opens nothing that is already warm.
    """

    catalogue: Any
    embeddings: Any

    def store(self, space: str, model_id: str, dim: int) -> Any: ...

    def encoders(self, settings: Settings) -> Any: ...


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).ravel()
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else v


def _embed_native(part: QueryPart, space: str, enc: Any) -> np.ndarray:
    """A part's unit vectors (rows) in a space that embeds its modality directly.

    A query file is decoded by its media kind as the indexer decodes such files: an
    image gives one row, a text file one row per passage and audio one per 10 s window,
    like the indexed items they are compared with; short texts give one row.
    """
    kind = media.for_query_kind(part.kind)
    if part.kind == "text":
        rows = enc.embed_texts([part.value])
    elif kind is None:
        raise UsageError(f"unknown query part kind {part.kind!r}")
    else:
        # the input this space takes from the kind, as the indexer picks it (_Run._encode_space)
        segment = kind.segments.get(space)
        pre = enc.image_preprocessor() if segment == media.IMAGE_SEGMENT else None
        d = kind.decode(part.value, media.DecodeContext(image_preprocessor=pre, query=True))
        if d.error or d.skip:
            raise MediaError(d.error or d.skip or "", path=part.value)
        if segment == media.IMAGE_SEGMENT and d.frames:
            rows = enc.embed_images(np.stack([px for _, _, px in d.frames]))  # a video: every kept frame
        elif segment == media.IMAGE_SEGMENT and d.pixels is not None:
            rows = enc.embed_images(np.asarray(d.pixels, dtype=np.float32)[None])
        elif segment == media.AUDIO_SEGMENT and d.audio_windows is not None:
            if not d.audio_windows and d.frames is not None:
                return np.zeros((0, enc.dim), np.float32)  # a silent video: its frames alone are the query
            if not d.audio_windows:
                raise MediaError("no audio to embed", path=part.value)
            rows = enc.embed_audio(np.stack([w for _, _, w in d.audio_windows]))
        elif segment != media.TEXT_SEGMENT or d.text is None:
            raise MediaError(f"nothing decoded for the {space} space", path=part.value)
        else:
            from xmr.documents import Document, split_document

            # PDF and HTML too, in passages cut as the indexer cuts them
            doc = Document(d.text, d.pages)
            passages = [p for p, _ in split_document(doc, enc.split_text)] if doc.text else []
            if not passages:
                raise MediaError("query text file is empty", path=part.value)
            rows = enc.embed_texts([p.text for p in passages])
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


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
        embeddings = EmbeddingCache(index_dir)
        try:
            return _Search(source, parts, settings, options, notify, embeddings).run(t0)  # type: ignore[arg-type]
        finally:
            embeddings.close()


def _background(cat: Any, space: str, model_id: str, kind: str, n: int, group_ids: np.ndarray) -> np.ndarray:
    """The calibration background of one group, from the state cache when this generation has it."""
    from xmr.calibrate import background_sample

    return cat.cached(
        f"background\0{space}\0{model_id}\0{kind}\0{n}",
        lambda: background_sample(
            cat, space, model_id, n=n, ids=group_ids, cache_dir=cache_dir(cat.index_dir) / "calibration"
        ),
    )


def prepare_state(cat: Catalogue, index_dir: Path) -> None:
    """Derive now what the first search of this catalogue generation would derive in O(N):
    the live and per-kind vector ids, the kind counts and the calibration backgrounds, into
    the state cache. Called by writers (``xmr index``) after their last commit; a cache that
    cannot be written is skipped, like every cache."""
    from xmr.query_cache import StateCache

    source = CachedSource(cat, StateCache(index_dir, cat.generation()))
    for space in SPACES:
        model_id = cat.active_model(space)
        if not model_id:
            continue
        source.live_vector_ids(space, model_id)
        for kind, n in sorted(source.segment_kinds(space, model_id).items()):
            if n:
                group_ids = source.group_vector_ids(space, model_id, kind)
                _background(source, space, model_id, kind, SearchOptions.background, group_ids)


class _Search:
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
        self.embeddings = embeddings  # xmr.query_cache.EmbeddingCache or None
        self.parts = parts
        self.settings = settings
        self.options = options
        self.notify = notify
        self.warm = warm
        self.encoders = warm.encoders(settings) if warm is not None else QueryEncoders(cat, settings, notify)
        # as the indexer stores them: absolute, symlinks not resolved
        self.under = [os.path.abspath(os.path.expanduser(u)) for u in options.under]
        self.selection = None  # xmr.filters.Selection: the files the metadata filters let through
        if options.filters is not None and options.filters.active:
            from xmr.filters import select

            self.selection = select(self.cat.meta_rows(), options.filters)
        self._native: dict[tuple[int, str], np.ndarray] = {}
        self._concepts: list[str] | None = None
        self._concept_mats: dict[str, np.ndarray] = {}
        self.embed_s = 0.0  # time inside the encoders, reported apart from the search itself

    # -- which groups exist and are wanted -------------------------------------------
    def _groups(self) -> list[tuple[str, str, str, int]]:
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

    # -- query vectors ---------------------------------------------------------------------
    def _native_rows(self, i: int, space: str) -> np.ndarray:
        key = (i, space)
        if key not in self._native:
            part = self.parts[i]
            cache_key = None
            if self.embeddings is not None and part.cacheable:
                from xmr.query_cache import part_key

                model_id = self.encoders.query_model_id(space)
                cache_key = part_key(model_id, part.kind, part.value)
                rows = self.embeddings.get(cache_key)
                if rows is not None:
                    # a cached vector was embedded at the precision its key names
                    from xmr.encoders import precision

                    self.encoders.note_precision(space, precision.of_model_id(model_id))
                    self._native[key] = rows
                    return rows
            t = time.perf_counter()
            rows = _embed_native(part, space, self.encoders.get(space))
            self.embed_s += time.perf_counter() - t
            if cache_key is not None:
                self.embeddings.put(cache_key, self.encoders.query_model_id(space), rows)
            self._native[key] = rows
        return self._native[key]

    def _native_vec(self, i: int, space: str) -> np.ndarray:
        rows = self._native_rows(i, space)
        return _unit(rows.mean(axis=0)) if len(rows) else np.zeros(rows.shape[1], np.float32)

    def _concept_matrix(self, space: str) -> np.ndarray:
        from xmr import bridge

        if self._concepts is None:
            self._concepts = bridge.load_concepts(self.options.concepts_file)
        if space not in self._concept_mats:
            model_id = self.cat.active_model(space) or ""
            mat = bridge.cached_concept_matrix(self.cat, model_id, self._concepts)
            if mat is None:
                t = time.perf_counter()
                mat = bridge.concept_matrix(self.cat, self.encoders.get(space), self._concepts, notify=self.notify)
                self.embed_s += time.perf_counter() - t
            self._concept_mats[space] = mat
        return self._concept_mats[space]

    def _query_vectors(self, space: str) -> tuple[np.ndarray | None, list[dict[str, Any]]]:
        """The query as rows in ``space`` and how each part got there.

        A single part with several segments (a long audio, a text file) keeps
        one row per segment: a file then scores by its best-matching pair, so a
        long recording used as the query finds itself. Combined parts become
        one weighted sum.
        """
        from xmr import bridge

        native = media.query_kinds()
        if len(self.parts) == 1 and self.parts[0].weight > 0 and space in native[self.parts[0].kind]:
            rows = self._native_rows(0, space)
            if not len(rows):
                return None, []  # nothing of the query in this space (a silent video)
            info = [
                {
                    "part": self.parts[0].label(),
                    "weight": self.parts[0].weight,
                    "route": "direct",
                    "concepts": None,
                    "vector": _unit(rows.mean(axis=0)),
                }
            ]
            return rows, info

        total = None
        info = []
        for i, part in enumerate(self.parts):
            if space in native[part.kind]:
                vec, route, concepts = self._native_vec(i, space), "direct", None
            else:
                src = native[part.kind][0]
                b = bridge.bridge(
                    self._native_vec(i, src),
                    self._concept_matrix(src),
                    self._concept_matrix(space),
                    self._concepts or [],
                )
                vec, route = b.vector, "bridge"
                concepts = [{"concept": c, "weight": round(w, 4)} for c, w in b.concepts]
            total = part.weight * vec if total is None else total + part.weight * vec
            info.append(
                {"part": part.label(), "weight": part.weight, "route": route, "concepts": concepts, "vector": vec}
            )
        if total is None or float(np.linalg.norm(total)) < 1e-6:
            return None, info
        return _unit(total)[None, :], info

    # -- the search -------------------------------------------------------------------------
    def run(self, t0: float) -> SearchResponse:
        from xmr.calibrate import fit_calibrators
        from xmr.store import index_backend, open_index

        groups = self._groups()
        opts = self.options
        routes: list[Route] = []
        searched: list[dict[str, Any]] = []
        part_vectors: dict[str, list[dict[str, Any]]] = {}
        plans: list[_GroupPlan] = []
        for space in sorted({g[0] for g in groups}):
            q, info = self._query_vectors(space)
            part_vectors[space] = info
            model_id = next(g[1] for g in groups if g[0] == space)
            routes.append(Route(space, model_id, [{k: v for k, v in d.items() if k != "vector"} for d in info]))
            if q is None:
                continue
            bridged = all(d["route"] == "bridge" for d in info if d["weight"] > 0)
            if self.warm is not None:
                store = self.warm.store(space, model_id, q.shape[1])
            else:
                ann = paths.ann_dir(self.cat.index_dir)
                # one query in this process: scanning the mapped file beats loading the graph
                store = open_index(
                    index_backend(self.cat), ann, self.cat, space, model_id, q.shape[1], readonly=True, mapped=True
                )
            space_total = self.cat.vector_count(space, model_id)
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
                bg = _background(self.cat, space, model_id, kind, opts.background, group_ids)
                plans.append(
                    _GroupPlan(
                        space,
                        model_id,
                        kind,
                        q,
                        store,
                        None if (only_group and not self.under and self.selection is None) else cand,
                        len(cand),
                        fit_calibrators(q, bg),
                        bridged,
                    )
                )
        # results collapse per file: fetch more segments until k files are found or groups run dry
        k_fetch = max(50, opts.k * 5)
        while True:
            results = self._collapse([h for plan in plans for h in self._group_hits(plan, k_fetch)])
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
            results = self._with_keywords(results, plans)
        results = results[: opts.k]
        if opts.sort == "date":
            self._sort_by_date(results)
        fill_snippets(self.cat, results, all_segments=opts.all_segments)
        if self.notify is not None:
            for plan in {id(p.store): p for p in plans}.values():
                if plan.store.fallback():
                    self.notify(
                        f"the {plan.space} vector index is unusable ({plan.store.fallback()}); searching exactly "
                        "until 'xmr index' rebuilds it"
                    )
        self._explain(results, part_vectors)
        return SearchResponse(
            query=self.parts,
            results=results,
            routes=routes,
            elapsed_s=time.perf_counter() - t0,
            searched=searched,
            notes=list(self.encoders.notes),
            embed_s=self.embed_s,
        )

    def _answer_key(self, plan: _GroupPlan, k_fetch: int) -> str | None:
        """The answer cache's key for one group search (None: not cacheable here)."""
        generation = getattr(getattr(self.cat, "state", None), "generation", None)
        # --under: the candidates come from the files table, which can change (a copy of indexed
        # content into the folder) without changing the vector generation
        if (
            self.embeddings is None
            or generation is None
            or self.under
            or self.selection is not None  # candidates from the files' metadata, which can change alone
            or plan.n_candidates < 0  # a keyword match's own scores (_with_keywords)
            or not all(p.cacheable for p in self.parts)
        ):
            return None
        import hashlib
        import json

        h = hashlib.blake2b(digest_size=20)
        # changes with every checkpoint of the vector index and any write to its files
        fingerprint = plan.store.fingerprint()
        from xmr import __version__

        head = [list(generation), fingerprint, plan.space, plan.model_id, plan.kind, k_fetch, self.options.exact]
        head.append(__version__)  # another version's answers are not reused
        h.update(json.dumps(head, sort_keys=True, default=str).encode())
        h.update(np.ascontiguousarray(plan.q, dtype="<f4").tobytes())
        return h.hexdigest()

    def _group_hits(self, plan: _GroupPlan, k_fetch: int) -> list[SegmentHit]:
        key = self._answer_key(plan, k_fetch)
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

    def _collapse(self, hits: list[SegmentHit]) -> list[Result]:
        """One result per file: its best segment; filters and k applied."""
        refs: dict[int, SegmentRef] = self.cat.segments_for_vectors([h.vector_id for h in hits])
        files = self.cat.files_for_hashes({r.hash for r in refs.values()}, under=self.under)
        types = set(self.options.types) or set(media.names())
        by_path: dict[str, Result] = {}
        for hit in sorted(hits, key=lambda h: (-h.score, -h.raw, h.vector_id)):
            ref = refs.get(hit.vector_id)
            if ref is None:  # deleted since the ANN file was written
                continue
            hit.start_s, hit.end_s = ref.start_s, ref.end_s
            hit.char_start, hit.char_end, hit.page, hit.origin = ref.char_start, ref.char_end, ref.page, ref.origin
            if ref.text is not None:  # stored with --store-snippets
                hit.snippet = shorten(ref.text)
            for path, modality, raw in files.get(ref.hash, []):
                if modality not in types or (self.selection is not None and path not in self.selection.paths):
                    continue
                res = by_path.get(path)
                if res is None:
                    by_path[path] = Result(
                        path=path, modality=modality, score=hit.score, best=hit, segments=[hit], raw_path=raw
                    )
                else:
                    res.segments.append(hit)
        ranked = sorted(by_path.values(), key=lambda r: (-r.score, -r.best.raw, r.path))
        if self.options.min_score is not None and self.options.match == "semantic":  # else on the fused score
            ranked = [r for r in ranked if r.score >= self.options.min_score]
        return ranked

    def _with_keywords(self, results: list[Result], plans: list[_GroupPlan]) -> list[Result]:
        """Fuse the keyword index's ranking into the semantic one (xmr.fusion). A keyword match the
        semantic search did not fetch gets its own semantic score: the groups are searched again
        with its vectors alone as candidates."""
        from dataclasses import replace

        from xmr import fusion

        text = self.options.keyword_text
        if text is None:
            text = " ".join(p.value for p in self.parts if p.kind == "text" and p.weight > 0)
        types = set(self.options.types) or set(media.names())
        matches = [
            (path, h, bm25)
            for path, h, modality, bm25 in self.cat.keyword_search(text)
            if modality in types
            and (self.selection is None or path in self.selection.paths)
            and (not self.under or any(path == u or path.startswith(u.rstrip("/") + "/") for u in self.under))
        ]
        keyword = fusion.keyword_scores([(path, bm25) for path, _, bm25 in matches])
        by_path = {r.path: r for r in results}
        missing = {h for path, h, _ in matches if path not in by_path}
        if missing:
            hits = []
            for plan in plans:
                cand = self.cat.vector_ids_of(plan.space, plan.model_id, plan.kind, missing)
                if plan.candidates is not None:
                    cand = np.intersect1d(cand, plan.candidates)
                if len(cand):
                    hits += self._group_hits(replace(plan, candidates=cand, n_candidates=-1), len(cand))
            by_path.update((r.path, r) for r in self._collapse(hits) if r.path in keyword)
        bm25s = {path: bm25 for path, _, bm25 in matches}
        ranks = {path: i for i, (path, _, _) in enumerate(matches, 1)}
        if self.options.match == "keyword":
            by_path = {p: r for p, r in by_path.items() if p in keyword}
        semantic = {p: r.score for p, r in by_path.items()} if self.options.match == "both" else {}
        fused = fusion.fuse(semantic, keyword)
        for path, r in by_path.items():
            r.semantic_score = r.score
            r.score = fused[path]
            if path in keyword:
                r.keyword = {"bm25": round(bm25s[path], 4), "rank": ranks[path], "score": round(keyword[path], 4)}
        out = sorted(by_path.values(), key=lambda r: (-r.score, -r.best.raw, r.path))
        if self.options.min_score is not None:
            out = [r for r in out if r.score >= self.options.min_score]
        return out

    def _sort_by_date(self, results: list[Result]) -> None:
        """Newest first (date taken, else modified); the score breaks ties."""
        from xmr.filters import dates as file_dates
        from xmr.filters import sort_key_date

        dates = file_dates(self.cat.meta_rows([r.path for r in results]))
        for r in results:
            date = dates.get(r.path)
            r.date = date.isoformat(timespec="seconds") if date is not None else None
        results.sort(key=lambda r: (sort_key_date(dates.get(r.path)), -r.score))

    def _explain(self, results: list[Result], part_vectors: dict[str, list[dict[str, Any]]]) -> None:
        """Per result: each query part's cosine with the best segment, and its route."""
        vecs = self.cat.vectors_by_id([r.best.vector_id for r in results])
        for r in results:
            v = vecs.get(r.best.vector_id)
            if v is None:
                continue
            for d in part_vectors.get(r.best.space, []):
                r.contributions.append(
                    {
                        "part": d["part"],
                        "weight": d["weight"],
                        "route": d["route"],
                        "cosine": round(float(np.dot(d["vector"], v)), 6),
                        "concepts": d["concepts"],
                    }
                )
