"""The embed step: an ``Embedder`` turns the plan's work items into what the driver commits.

The driver (xmr.index.run) is handed an ``Embedder``; it never builds encoders or
pools itself. It asks the embedder to load the spaces it decided on, to decode the
work (``triage``, the driver's callback, says per identified file whether its
content still lacks vectors: only the driver reads the catalogue), and to embed
each batch. ``LocalEmbedder`` is the in-process implementation: decode workers in a
process pool (or inline) and the encoders in this process. Another executor (say one
that sends batches to remote workers) implements the same protocol; the driver
stays as it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from xmr import media
from xmr.catalogue import SegmentData
from xmr.documents import Document, Policy, is_junk, split_document
from xmr.encoders import model_status
from xmr.encoders.base import ModelInfo
from xmr.encoders.engine import index_encoder
from xmr.errors import ModelMissing
from xmr.heap import release_free_heap
from xmr.index.items import DecodeConfig, Triage, _Item, _Prepared, wanted_spaces
from xmr.index.options import IndexOptions
from xmr.index.schedule import DecodeScheduler
from xmr.ocr.record import config_for
from xmr.settings import Settings


@dataclass
class Encoding:
    """One content's vectors in one space: what ``Catalogue.add_encoding`` stores."""

    model_id: str
    segments: list[SegmentData]
    vectors: np.ndarray
    dropped: int = 0  # junk passages left out


@dataclass
class Embedded:
    """What embedding a batch gave: encodings by (hash, space), and why some files failed
    (by position in the batch)."""

    encodings: dict[tuple[str, str], Encoding] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)


class Embedder(Protocol):
    """Turns work items into decoded files and decoded files into vectors."""

    def check_available(self, spaces: Sequence[str]) -> None:
        """Raise ``ModelMissing`` naming every space whose model cannot be loaded (offline)."""
        ...

    def load(self, space: str) -> ModelInfo:
        """Load the space's encoder (once); its vectors are made by the model returned."""
        ...

    def loaded(self) -> Mapping[str, ModelInfo]:
        """The spaces loaded so far, in load order."""
        ...

    def decoded(self, work: Sequence[_Item], triage: Triage) -> AbstractContextManager[Iterator[_Prepared]]:
        """A context manager giving an iterator of the work decoded (any order). Spaces
        loaded while it runs apply to the files decoded from then on."""
        ...

    def redecode(self, batch: list[_Prepared], triage: Triage) -> None:
        """Prepare again, in place, files met before the space that decodes them was loaded."""
        ...

    def embed(self, batch: Sequence[_Prepared], spaces_for: Mapping[str, Sequence[str]]) -> Embedded:
        """Vectors in every loaded space for each content of the batch that lacks them."""
        ...

    def encoder(self, space: str) -> Any:
        """A loaded space's encoder (``info``, ``embed_texts``): the finish step embeds the
        bridge vocabulary with it."""
        ...


class LocalEmbedder:
    """Decode workers in a process pool (or inline) and the encoders in this process."""

    def __init__(self, settings: Settings, options: IndexOptions):
        self.settings = settings
        self.options = options
        self.encoders: dict[str, Any] = {}
        self.config: DecodeConfig | None = None  # rebuilt whenever an encoder is loaded
        self.scheduler = DecodeScheduler(options, self._config)
        if options.workers != 0:
            # Decoders and torch's OpenMP threads share the cores: spinning OpenMP threads
            # starve the decoders (measured: 68% of the model-only rate with spinning, 77%
            # passive; benchmarks/index.py). Only effective before torch is first imported,
            # which choosing a precision may do (the driver's stale spaces).
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    # -- models -------------------------------------------------------------------------
    def check_available(self, spaces: Sequence[str]) -> None:
        """Offline, report every missing model in one message rather than one per run."""
        if not self.settings.offline:
            return
        missing = [st for st in (model_status(sp, self.settings) for sp in spaces) if not st.present]
        if len(missing) < 2:
            return  # none, or one: the backend's own message is the most specific
        what = "; ".join(f"{st.space} model {st.spec} (looked in {st.location})" for st in missing)
        raise ModelMissing(
            f"model weights not found: {what}",
            hint="run `xmr models download` while online, or point XMR_CLIP_MODEL / XMR_CLAP_MODEL "
            "(--clip-model / --clap-model) at local files",
        )

    def load(self, space: str) -> ModelInfo:
        if space not in self.encoders:
            self.encoders[space] = index_encoder(space, self.settings)
            self.config = None
            release_free_heap()  # what building the model freed (xmr.heap)
        return self.encoders[space].info

    def loaded(self) -> Mapping[str, ModelInfo]:
        return {s: e.info for s, e in self.encoders.items()}

    def encoder(self, space: str) -> Any:
        return self.encoders[space]

    # -- decoding -----------------------------------------------------------------------
    def _config(self) -> DecodeConfig:
        if self.config is None:
            clip = self.encoders.get("clip")
            self.config = DecodeConfig(
                image_preprocessor=clip.image_preprocessor() if clip is not None else None,
                audio_window_s=self.options.audio_window_s,
                audio_hop_s=self.options.audio_hop_s,
                max_text_bytes=self.options.max_text_bytes,
                policy=Policy.with_extensions(self.options.text_extensions),
                video=_sampling(self.options),
                ocr=config_for(self.options.ocr),
            )
        return self.config

    @property
    def on_page(self) -> Callable[[str, int, int], None] | None:
        """Progress inside one long decode (path, pages done, pages): a scanned PDF's OCR."""
        return self.scheduler.on_page

    @on_page.setter
    def on_page(self, report: Callable[[str, int, int], None] | None) -> None:
        self.scheduler.on_page = report

    def decoded(self, work: Sequence[_Item], triage: Triage) -> AbstractContextManager[Iterator[_Prepared]]:
        return self.scheduler.decoded(work, triage)

    def redecode(self, batch: list[_Prepared], triage: Triage) -> None:
        self.scheduler.redecode(batch, triage)

    # -- embedding ----------------------------------------------------------------------
    def embed(self, batch: Sequence[_Prepared], spaces_for: Mapping[str, Sequence[str]]) -> Embedded:
        out = Embedded()
        for space, enc in self.encoders.items():
            out.encodings.update(
                encode_space(space, enc, batch, spaces_for, out.failed, store_snippets=self.options.store_snippets)
            )
            release_free_heap()  # this space's activations, before the next space's run (xmr.heap)
        return out


def _sampling(options: IndexOptions) -> Any:
    from xmr.preprocess.video import Sampling

    return Sampling(
        every_s=options.video_every_s, max_frames=options.video_max_frames, deadline_s=options.decode_timeout_s
    )


def encode_space(
    space: str,
    enc: Any,
    batch: Sequence[_Prepared],
    spaces_for: Mapping[str, Sequence[str]],
    failed: dict[int, str],
    *,
    store_snippets: bool = False,
) -> dict[tuple[str, str], Encoding]:
    """Segments, vectors and the number of junk passages dropped, for every content of the
    batch that lacks this space."""
    out: dict[tuple[str, str], Encoding] = {}
    jobs: list[tuple[int, str, list[SegmentData]]] = []
    dropped: dict[int, int] = {}
    pixels: list[np.ndarray] = []
    windows: list[np.ndarray] = []
    texts: list[str] = []
    planned: set[str | None] = set()
    for i, p in enumerate(batch):
        if p.error or p.skip or space not in wanted_spaces(p, spaces_for) or space in p.spaces_done:
            continue
        if p.hash in planned:
            continue  # identical content twice in one batch: embedded once
        # the input this space takes from the file's kind (xmr.media), whatever the kind
        kind = media.get(p.modality)
        segment = kind.segments.get(space) if space in spaces_for.get(p.modality, ()) else None
        # text recognised in the file (OCR): passages beside its own segment, or alone in a space
        # the kind has no segment of its own in (an image's text in clap)
        optional = p.text is not None and kind.optional_segments.get(space) == media.TEXT_SEGMENT
        if segment is None and optional:
            jobs.append((i, "text", _text_segments(p, enc, dropped, i, texts, store_snippets) or []))
            planned.add(p.hash)
            continue
        if segment == media.IMAGE_SEGMENT and p.frames is not None:
            # timed images (video frames): one segment each, with its time span
            jobs.append((i, "image", [SegmentData(kind="image", start_s=s, end_s=e) for s, e, _ in p.frames]))
            pixels.extend(px for _, _, px in p.frames)
            dropped[i] = p.dropped
        elif segment == media.IMAGE_SEGMENT and p.pixels is not None:
            jobs.append((i, "image", [SegmentData(kind="image")]))
            pixels.append(p.pixels)
        elif segment == media.AUDIO_SEGMENT and p.audio_windows is not None:
            segs = [SegmentData(kind="audio_window", start_s=s, end_s=e) for s, e, _ in p.audio_windows]
            if not segs and p.frames is None:
                failed[i] = "no audio to embed"
                continue
            jobs.append((i, "audio", segs))
            windows.extend(w for _, _, w in p.audio_windows)
        elif segment == media.TEXT_SEGMENT and p.text is not None:
            segs = _text_segments(p, enc, dropped, i, texts, store_snippets)
            if segs is None:
                failed[i] = "no text to embed"
                continue
            jobs.append((i, "text", segs))
        else:
            failed[i] = f"nothing decoded for the {space} space"
            continue
        if optional and segment != media.TEXT_SEGMENT:
            segs = _text_segments(p, enc, dropped, i, texts, store_snippets)
            if segs:
                jobs.append((i, "text", segs))
        planned.add(p.hash)
    # a copy of content that failed above fails the same way
    for i, p in enumerate(batch):
        if i not in failed and p.hash not in planned and not p.error and not p.skip:
            if space in wanted_spaces(p, spaces_for) and space not in p.spaces_done:
                failed[i] = next(
                    (failed[j] for j, q in enumerate(batch) if q.hash == p.hash and j in failed),
                    f"nothing decoded for the {space} space",
                )
    if not jobs:
        return out
    vec_parts = []
    if pixels:
        vec_parts.append(("image", enc.embed_images(np.stack(pixels))))
    if windows:
        vec_parts.append(("audio", enc.embed_audio(np.stack(windows))))
    if texts:
        vec_parts.append(("text", enc.embed_texts(texts)))
    cursors = {kind: 0 for kind, _ in vec_parts}
    arrays = dict(vec_parts)
    for i, kind, segs in jobs:
        start = cursors.get(kind, 0)
        cursors[kind] = start + len(segs)
        vecs = arrays[kind][start : start + len(segs)] if segs else np.zeros((0, enc.dim), np.float32)
        key = (batch[i].hash, space)
        if key in out:  # a second kind of input of the same file (an image and its text): one encoding
            prev = out[key]
            out[key] = Encoding(prev.model_id, prev.segments + segs, np.concatenate([prev.vectors, vecs]), prev.dropped)
        else:
            out[key] = Encoding(enc.info.model_id, segs, vecs, dropped.get(i, 0))
    return out


def _text_segments(
    p: _Prepared, enc: Any, dropped: dict[int, int], i: int, texts: list[str], store_snippets: bool
) -> list[SegmentData] | None:
    """The passages of a decoded text (None: nothing to cut); their texts go to ``texts``."""
    passages = split_document(Document(p.text or "", p.pages), enc.split_text)
    if not passages:
        return None
    kept = [(ps, page) for ps, page in passages if not (p.junk_guard and is_junk(ps.text))]
    # a content whose passages are all junk gets no segment (but its encoding is recorded)
    dropped[i] = dropped.get(i, 0) + len(passages) - len(kept)
    texts.extend(ps.text for ps, _ in kept)
    return [
        SegmentData(
            kind="text_passage",
            char_start=ps.start,
            char_end=ps.end,
            text=ps.text if store_snippets else None,
            page=page,
            origin=p.text_origin,
        )
        for ps, page in kept
    ]
