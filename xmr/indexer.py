"""``xmr index``: the public entry point; the steps live in :mod:`xmr.index`.

Kept so ``from xmr.indexer import index, IndexOptions`` (and the names tests use) go on working.
"""

from __future__ import annotations

from xmr.index.decode import WORKER_NICE, _init_worker
from xmr.index.embed import Embedder, LocalEmbedder
from xmr.index.items import MIN_TEXT_SHARE, PASSAGE_CHARS, _Item, _Prepared, _segment_estimate
from xmr.index.options import IndexOptions, IndexReport, Progress, _NoProgress
from xmr.index.run import index

__all__ = [
    "MIN_TEXT_SHARE",
    "PASSAGE_CHARS",
    "WORKER_NICE",
    "Embedder",
    "IndexOptions",
    "IndexReport",
    "LocalEmbedder",
    "Progress",
    "_Item",
    "_NoProgress",
    "_Prepared",
    "_init_worker",
    "_segment_estimate",
    "index",
]
