"""Where decoding runs for ``LocalEmbedder``: inline, or in a pool of worker processes.

Workers identify (hash, classify) and decode; between the two the driver's ``triage``
(in this process) says whether the content still needs vectors, so workers never
open the catalogue.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from xmr import media
from xmr.index.decode import _decoding_items, _init_worker, decode, identify, set_page_reporter
from xmr.index.items import DecodeConfig, Triage, _Item, _Prepared
from xmr.index.options import IndexOptions

MAX_BYTES_IN_FLIGHT = 64 * 1024 * 1024  # on-disk bytes of the files being decoded at once


class DecodeScheduler:
    """Runs ``identify`` and ``decode`` over the work, bounded in flight."""

    def __init__(self, options: IndexOptions, config: Callable[[], DecodeConfig]):
        self.options = options
        self._config = config  # read per file: a model loaded meanwhile changes it
        # (path, pages done, pages): progress inside one long decode (a scanned PDF's OCR)
        self.on_page: Callable[[str, int, int], None] | None = None

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
            set_page_reporter(self.on_page)
            try:
                yield (self._prepare(item, triage) for item in work)
            finally:
                set_page_reporter(None)
            return
        import multiprocessing

        # spawn: forking a process that holds torch threads is unsafe. The pool starts
        # before the models load, so the workers' start-up overlaps it.
        ctx = multiprocessing.get_context("spawn")
        pages = ctx.SimpleQueue() if self.on_page is not None else None  # workers' page reports
        pool = ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(media.snapshot(), pages)
        )
        with pool:
            for _ in range(workers):
                pool.submit(int)  # starts a worker process now
            try:
                yield self._pooled(pool, workers, work, triage, pages)
            except BaseException:
                # let the running tasks (one file each) finish: tearing the pool down
                # under its feeder thread prints errors at exit
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def _pages(self, pages: Any) -> None:
        """Pass on the page reports the workers queued."""
        while pages is not None and self.on_page is not None and not pages.empty():
            self.on_page(*pages.get())

    def _pooled(
        self, pool: ProcessPoolExecutor, workers: int, work: Sequence[_Item], triage: Triage, pages: Any = None
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
                # a known hash is identified in a worker too: it reads the file's metadata
                pending[pool.submit(identify, nxt)] = nxt.size
                nxt = next(items, None)
            if not pending:
                return
            # with page reports, wake up now and then to show them while a long file decodes
            done, _ = wait(pending, timeout=0.5 if pages is not None else None, return_when=FIRST_COMPLETED)
            self._pages(pages)
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
        """Prepare again the images met before CLIP's preprocessor was loaded."""
        config = self._config()
        for i, p in enumerate(batch):
            if p.undecoded and config.image_preprocessor is not None:
                again = self._prepare(p.item, triage)
                again.bytes_read += p.bytes_read
                again.opened = again.opened or p.opened
                batch[i] = again


def _decode_if(p: _Prepared, triage: Triage, config: DecodeConfig) -> _Prepared:
    if p.error or p.skip or not triage(p):
        p.head = None
        return p
    return decode(p, config)
