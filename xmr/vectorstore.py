"""Moved to ``xmr.store`` (the hnswlib backend is ``xmr.store.hnsw.HnswStore``).

Kept only so code written against the old module keeps importing while the
branches that still use it are merged; new code imports from ``xmr.store``.
"""

from __future__ import annotations

from xmr.store.hnsw import EXACT_THRESHOLD, HnswStore
from xmr.store.hnsw_build import DEFAULT_PARAMS, HnswParams
from xmr.store.hnsw_file import file_checksum, index_file_name
from xmr.store.memory import MemoryVectorSource
from xmr.store.source import VectorSource
from xmr.store.topk import sorted_intersection

VectorStore = HnswStore

__all__ = [
    "DEFAULT_PARAMS",
    "EXACT_THRESHOLD",
    "HnswParams",
    "MemoryVectorSource",
    "VectorSource",
    "VectorStore",
    "file_checksum",
    "index_file_name",
    "sorted_intersection",
]
