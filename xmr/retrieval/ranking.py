"""From segment hits to the ranked files: one result per file (its best segment first), the
keyword ranking fused in (:mod:`xmr.fusion`), the date sort and the per-result explanation."""

from __future__ import annotations

from typing import Any

import numpy as np

from xmr import media
from xmr.catalogue import SegmentRef
from xmr.query import QueryPart
from xmr.retrieval.groups import GroupPlan, GroupSearch
from xmr.retrieval.types import Result, SearchOptions, SegmentHit
from xmr.snippets import shorten


class Ranking:
    """Ranks one query's hits; ``groups`` searches again for keyword matches the semantic
    search did not fetch."""

    def __init__(
        self,
        cat: Any,
        parts: list[QueryPart],
        options: SearchOptions,
        groups: GroupSearch,
    ) -> None:
        self.cat = cat
        self.parts = parts
        self.options = options
        self.groups = groups
        self.types = set(options.types) or set(media.names())

    @property
    def under(self) -> list[str]:
        return self.groups.under

    @property
    def selection(self) -> Any:
        return self.groups.selection

    def collapse(self, hits: list[SegmentHit]) -> list[Result]:
        """One result per file: its best segment; filters and k applied."""
        refs: dict[int, SegmentRef] = self.cat.segments_for_vectors([h.vector_id for h in hits])
        files = self.cat.files_for_hashes({r.hash for r in refs.values()}, under=self.under)
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
                if modality not in self.types or (self.selection is not None and path not in self.selection.paths):
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

    def with_keywords(self, results: list[Result], plans: list[GroupPlan]) -> list[Result]:
        """Fuse the keyword index's ranking into the semantic one (xmr.fusion). A keyword match the
        semantic search did not fetch gets its own semantic score: the groups are searched again
        with its vectors alone as candidates."""
        from dataclasses import replace

        from xmr import fusion

        text = self.options.keyword_text
        if text is None:
            text = " ".join(p.value for p in self.parts if p.kind == "text" and p.weight > 0)
        matches = [
            (path, h, bm25)
            for path, h, modality, bm25 in self.cat.keyword_search(text)
            if modality in self.types
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
                    hits += self.groups.hits(replace(plan, candidates=cand, n_candidates=-1), len(cand))
            by_path.update((r.path, r) for r in self.collapse(hits) if r.path in keyword)
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

    def sort_by_date(self, results: list[Result]) -> None:
        """Newest first (date taken, else modified); the score breaks ties."""
        from xmr.filters import dates as file_dates
        from xmr.filters import sort_key_date

        dates = file_dates(self.cat.meta_rows([r.path for r in results]))
        for r in results:
            date = dates.get(r.path)
            r.date = date.isoformat(timespec="seconds") if date is not None else None
        results.sort(key=lambda r: (sort_key_date(dates.get(r.path)), -r.score))

    def explain(self, results: list[Result], part_vectors: dict[str, list[dict[str, Any]]]) -> None:
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
