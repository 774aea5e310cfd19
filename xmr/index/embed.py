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
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from xmr.catalogue import SegmentData
from xmr.documents import Document, Policy, is_junk, split_document
from xmr.encoders import model_status
from xmr.encoders.base import ModelInfo
from xmr.encoders.engine import index_encoder
from xmr.errors import ModelMissing
from xmr.index.decode import _decoding_items, _init_worker, decode, identify
from xmr.index.items import DecodeConfig, _Item, _Prepared
from xmr.index.options import IndexOptions
from xmr.settings import Settings

MAX_BYTES_IN_FLIGHT = 64 * 1024 * 1024  # on-disk bytes of the files being decoded at once

# The driver's verdict on an identified file: sets ``spaces_done`` (spaces its content is
# already embedded in) and says whether it must be decoded (some wanted space lacks it).
Triage = Callable[[_Prepared], bool]


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

    def decoded(self, work: Sequence[_Item], triage: Triage) -> Any:
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
            )
        return self.config

    def _prepare(self, item: _Item, triage: Triage) -> _Prepared:
        """Identify, triage and decode one file in this process."""
        p = identify(item)
        return _decode_if(p, triage, self._config())

    @contextmanager
    def decoded(self, work: Sequence[_Item], triage: Triage) -> Iterator[Iterator[_Prepared]]:
        workers = self.options.workers
        if workers is None:
            workers = max(1, min(4, (os.cpu_count() or 2) - 1))
        if workers == 0 or _decoding_items(work) < 8:
            # the config is read per file: a load meanwhile (the driver's safety net) updates it
            yield (self._prepare(item, triage) for item in work)
            return
        import multiprocessing

        # spawn: forking a process that holds torch threads is unsafe. The pool starts
        # before the models load, so the workers' start-up overlaps it.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
            for _ in range(workers):
                pool.submit(int)  # starts a worker process now
            try:
                yield self._pooled(pool, workers, work, triage)
            except BaseException:
                # let the running tasks (one file each) finish: tearing the pool down
                # under its feeder thread prints errors at exit
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def _pooled(
        self, pool: ProcessPoolExecutor, workers: int, work: Sequence[_Item], triage: Triage
    ) -> Iterator[_Prepared]:
        """Identify in the workers, triage here, decode in the workers what needs it."""
        # deep enough that workers prepare the next batch while the model encodes this one
        max_in_flight = max(workers * 4, min(self.options.commit_segments, 64))
        pending: dict[Future[_Prepared], int] = {}
        decoding: set[Future[_Prepared]] = set()
        items = iter(work)
        nxt = next(items, None)
        while True:
            # bounded by count and by the files' sizes: a decoded hour of audio is ~700 MB,
            # so a few long recordings must not be decoded all at once
            while (
                nxt is not None
                and len(pending) < max_in_flight
                and (not pending or sum(pending.values()) + nxt.size <= MAX_BYTES_IN_FLIGHT)
            ):
                if nxt.known_hash is not None and nxt.known_modality is not None:
                    p = identify(nxt)  # nothing to read: the hash is known
                    if triage(p):
                        fut = pool.submit(decode, p, self._config())
                        pending[fut] = nxt.size
                        decoding.add(fut)
                    else:
                        p.head = None
                        yield p
                else:
                    pending[pool.submit(identify, nxt)] = nxt.size
                nxt = next(items, None)
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                size = pending.pop(fut)
                p = fut.result()
                if fut in decoding:
                    decoding.discard(fut)
                    yield p
                elif triage(p):
                    again = pool.submit(decode, p, self._config())
                    pending[again] = size
                    decoding.add(again)
                else:
                    p.head = None
                    yield p

    def redecode(self, batch: list[_Prepared], triage: Triage) -> None:
        config = self._config()
        for i, p in enumerate(batch):
            if p.undecoded and config.image_preprocessor is not None:
                again = self._prepare(p.item, triage)
                again.bytes_read += p.bytes_read
                again.opened = again.opened or p.opened
                batch[i] = again

    # -- embedding ----------------------------------------------------------------------
    def embed(self, batch: Sequence[_Prepared], spaces_for: Mapping[str, Sequence[str]]) -> Embedded:
        out = Embedded()
        for space, enc in self.encoders.items():
            out.encodings.update(self._encode_space(space, enc, batch, spaces_for, out.failed))
        return out

    def _encode_space(
        self,
        space: str,
        enc: Any,
        batch: Sequence[_Prepared],
        spaces_for: Mapping[str, Sequence[str]],
        failed: dict[int, str],
    ) -> dict[tuple[str, str], Encoding]:
        """Segments, vectors and the number of junk passages dropped, for every content of the
        batch that lacks this space."""
        out: dict[tuple[str, str], Encoding] = {}
        jobs: list[tuple[int, list[SegmentData]]] = []
        dropped: dict[int, int] = {}
        pixels: list[np.ndarray] = []
        windows: list[np.ndarray] = []
        texts: list[str] = []
        planned: set[str | None] = set()
        for i, p in enumerate(batch):
            if p.error or p.skip or space not in spaces_for.get(p.modality, ()) or space in p.spaces_done:
                continue
            if p.hash in planned:
                continue  # identical content twice in one batch: embedded once
            if p.modality == "image" and p.pixels is not None:
                jobs.append((i, [SegmentData(kind="image")]))
                pixels.append(p.pixels)
            elif p.modality == "audio" and p.audio_windows is not None:
                segs = [SegmentData(kind="audio_window", start_s=s, end_s=e) for s, e, _ in p.audio_windows]
                if not segs:
                    failed[i] = "no audio to embed"
                    continue
                jobs.append((i, segs))
                windows.extend(w for _, _, w in p.audio_windows)
            elif p.modality == "text" and p.text is not None:
                passages = split_document(Document(p.text, p.pages), enc.split_text)
                kept = [(ps, page) for ps, page in passages if not (p.junk_guard and is_junk(ps.text))]
                if not passages:
                    failed[i] = "no text to embed"
                    continue
                # a content whose passages are all junk gets no segment (but its encoding is recorded)
                dropped[i] = len(passages) - len(kept)
                store = self.options.store_snippets
                segs = [
                    SegmentData(
                        kind="text_passage",
                        char_start=ps.start,
                        char_end=ps.end,
                        text=ps.text if store else None,
                        page=page,
                    )
                    for ps, page in kept
                ]
                jobs.append((i, segs))
                texts.extend(ps.text for ps, _ in kept)
            else:
                failed[i] = f"nothing decoded for the {space} space"
                continue
            planned.add(p.hash)
        # a copy of content that failed above fails the same way
        for i, p in enumerate(batch):
            if i not in failed and p.hash not in planned and not p.error and not p.skip:
                if space in spaces_for.get(p.modality, ()) and space not in p.spaces_done:
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
        for i, segs in jobs:
            kind = batch[i].modality
            start = cursors.get(kind, 0)
            cursors[kind] = start + len(segs)
            vecs = arrays[kind][start : start + len(segs)] if segs else np.zeros((0, enc.dim), np.float32)
            out[(batch[i].hash, space)] = Encoding(enc.info.model_id, segs, vecs, dropped.get(i, 0))
        return out


def _decode_if(p: _Prepared, triage: Triage, config: DecodeConfig) -> _Prepared:
    if p.error or p.skip or not triage(p):
        p.head = None
        return p
    return decode(p, config)
