"""What a search takes and returns: options, segment hits, per-file results and the response.

Plain data, shared by the search steps (:mod:`xmr.retrieval`), the CLI's rendering and the
server; ``xmr.search`` re-exports it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from xmr import media
from xmr.catalogue import path_key
from xmr.query import QueryPart
from xmr.settings import Settings

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
    query_cache: bool = True  # False: embed and search afresh (xmr eval measures latency; no cached answers)


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
