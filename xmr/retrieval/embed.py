"""A query's vectors per space: each part embedded where its modality has an encoder, else
bridged through text concepts (:mod:`xmr.bridge`), with the query cache in front of the encoders."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from xmr import media
from xmr.errors import MediaError, UsageError
from xmr.query import QueryPart


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).ravel()
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else v


def embed_native(part: QueryPart, space: str, enc: Any) -> np.ndarray:
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


class QueryVectors:
    """The query's rows in each space, and how each part got there (direct or bridged).

    ``cat`` is the catalogue (bridge concepts cached per model), ``encoders`` the lazily loading
    query encoders, ``embeddings`` the query cache (None: none). ``embed_s`` adds up the time spent
    inside the encoders, reported apart from the search itself.
    """

    def __init__(
        self,
        cat: Any,
        parts: list[QueryPart],
        encoders: Any,
        embeddings: Any = None,
        concepts_file: str | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.cat = cat
        self.parts = parts
        self.encoders = encoders
        self.embeddings = embeddings  # xmr.query_cache.EmbeddingCache or None
        self.concepts_file = concepts_file
        self.notify = notify
        self._native: dict[tuple[int, str], np.ndarray] = {}
        self._concepts: list[str] | None = None
        self._concept_mats: dict[str, np.ndarray] = {}
        self.embed_s = 0.0

    def native_rows(self, i: int, space: str) -> np.ndarray:
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
            rows = embed_native(part, space, self.encoders.get(space))
            self.embed_s += time.perf_counter() - t
            if cache_key is not None:
                self.embeddings.put(cache_key, self.encoders.query_model_id(space), rows)
            self._native[key] = rows
        return self._native[key]

    def native_vec(self, i: int, space: str) -> np.ndarray:
        rows = self.native_rows(i, space)
        return unit(rows.mean(axis=0)) if len(rows) else np.zeros(rows.shape[1], np.float32)

    def concept_matrix(self, space: str) -> np.ndarray:
        from xmr import bridge

        if self._concepts is None:
            self._concepts = bridge.load_concepts(self.concepts_file)
        if space not in self._concept_mats:
            model_id = self.cat.active_model(space) or ""
            mat = bridge.cached_concept_matrix(self.cat, model_id, self._concepts)
            if mat is None:
                t = time.perf_counter()
                mat = bridge.concept_matrix(self.cat, self.encoders.get(space), self._concepts, notify=self.notify)
                self.embed_s += time.perf_counter() - t
            self._concept_mats[space] = mat
        return self._concept_mats[space]

    def in_space(self, space: str) -> tuple[np.ndarray | None, list[dict[str, Any]]]:
        """The query as rows in ``space`` and how each part got there.

        A single part with several segments (a long audio, a text file) keeps
        one row per segment: a file then scores by its best-matching pair, so a
        long recording used as the query finds itself. Combined parts become
        one weighted sum.
        """
        from xmr import bridge

        native = media.query_kinds()
        if len(self.parts) == 1 and self.parts[0].weight > 0 and space in native[self.parts[0].kind]:
            rows = self.native_rows(0, space)
            if not len(rows):
                return None, []  # nothing of the query in this space (a silent video)
            info = [
                {
                    "part": self.parts[0].label(),
                    "weight": self.parts[0].weight,
                    "route": "direct",
                    "concepts": None,
                    "vector": unit(rows.mean(axis=0)),
                }
            ]
            return rows, info

        total = None
        info = []
        for i, part in enumerate(self.parts):
            if space in native[part.kind]:
                vec, route, concepts = self.native_vec(i, space), "direct", None
            else:
                src = native[part.kind][0]
                b = bridge.bridge(
                    self.native_vec(i, src),
                    self.concept_matrix(src),
                    self.concept_matrix(space),
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
        return unit(total)[None, :], info
