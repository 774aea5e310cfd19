"""An hnswlib file answered in place: its vectors memory-mapped and scanned, the graph never loaded.

A process that asks one query pays for loading the graph and then uses ~1 ms of
it. hnswlib's ``load_index`` walks every element's link list through an
ifstream (a seek and a buffer refill per element): 0.99 s for the 600k-vector
file of benchmarks/search_cli.py at 1M, while one query's pass over the same
600k vectors, mapped from the page cache, takes 0.05-0.08 s (faults included).
So one-shot readers (``xmr search``, each query of ``xmr eval``) scan, and are
exact; a long-lived one (``xmr serve``) loads the graph once and walks it.

hnswlib 0.8's file (``saveIndex``): a 96-byte header, then ``cur_element_count``
records of ``size_data_per_element`` bytes each (level-0 links, the vector as
``dim`` float32 at ``offsetData``, the label as uint64 at ``label_offset``),
then the upper levels' link lists, which a scan never reads. The caller has
checked the header and the size against the state row (``hnsw_file.check_header``).
"""

from __future__ import annotations

import mmap
import struct

import numpy as np

from xmr.store.topk import empty, topk

# query rows scanned together: the (rows, n) score block stays under 256 MB
_BLOCK_FLOATS = 64 << 20
# ids below this multiple of the element count get a dense label -> position table
_DENSE_FACTOR = 4


class MappedIndex:
    """The vectors and labels of one hnswlib file, read-only, by exact scan.

    Offers what ``HnswStore`` uses of ``hnswlib.Index`` on a reader's path
    (``element_count``, ``get_ids_list``, ``get_items``, ``mark_deleted``) plus
    ``search`` over a set of member labels.
    """

    def __init__(self, fd: int, size: int, header: struct.Struct, dim: int) -> None:
        self._map = mmap.mmap(fd, size, access=mmap.ACCESS_READ)  # the mapping keeps the inode, not the name
        fields = header.unpack_from(self._map, 0)
        count, size_per, label_off, data_off = fields[2], fields[3], fields[4], fields[5]
        self.dim = int(dim)
        self.element_count = int(count)
        self._vecs = np.ndarray(
            (count, dim), np.float32, buffer=self._map, offset=header.size + data_off, strides=(size_per, 4)
        )
        raw = np.ndarray((count,), "<u8", buffer=self._map, offset=header.size + label_off, strides=(size_per,))
        self._labels = raw.astype(np.int64)  # one copy: unaligned in the file, and read often
        self._table: np.ndarray | None = None
        self._scores: tuple[bytes, np.ndarray] | None = None
        with_madvise = getattr(self._map, "madvise", None)
        if with_madvise is not None and hasattr(mmap, "MADV_WILLNEED"):
            with_madvise(mmap.MADV_WILLNEED)  # start reading ahead while the labels are checked

    def problem(self, upto: int) -> str:
        """Why the labels cannot be the file's (duplicates, or outside 0..upto), or ""."""
        labels = np.sort(self._labels, kind="stable")  # nearly sorted (insertion order): cheap
        if len(labels) and (labels[0] < 0 or labels[-1] > upto):
            return "index labels outside the catalogue's ids"
        if len(labels) > 1 and not bool((labels[1:] > labels[:-1]).all()):
            return "index labels repeat"
        return ""

    # -- the hnswlib.Index surface a reader uses --------------------------------------------
    def get_ids_list(self) -> np.ndarray:
        return self._labels.copy()

    def get_items(self, ids: np.ndarray) -> np.ndarray:
        pos = self._positions(np.asarray(ids, np.int64))
        if (pos < 0).any():
            raise RuntimeError("Label not found")  # as hnswlib says it
        return np.array(self._vecs[pos], dtype=np.float32)

    def mark_deleted(self, label: int) -> None:
        """Nothing to mark: ``search`` is always given the live members."""

    # -- search --------------------------------------------------------------------------------
    def search(self, q: np.ndarray, k: int, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of each row of ``q`` among ``members`` (labels in the file)."""
        m = len(q)
        if len(members) == 0 or k <= 0:
            return empty(m)
        pos = self._positions(members)
        rows = max(1, _BLOCK_FLOATS // max(1, self.element_count))
        parts = [topk(self._score(q[s : s + rows])[:, pos], members, k) for s in range(0, m, rows)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _score(self, q: np.ndarray) -> np.ndarray:
        """Every element's similarity to each row of q; the last block is kept, since every
        group of a space searches with the same query rows."""
        key = q.tobytes()
        if self._scores is None or self._scores[0] != key:
            self._scores = (key, q @ self._vecs.T)
        return self._scores[1]

    def _positions(self, labels: np.ndarray) -> np.ndarray:
        """Record positions of labels (-1 where the file has none)."""
        if self._table is None:
            top = int(self._labels.max()) if self.element_count else 0
            if top <= _DENSE_FACTOR * self.element_count + 1024:
                table = np.full(top + 1, -1, np.int64)
                table[self._labels] = np.arange(self.element_count)
                self._table = table
            else:  # sparse ids: sorted labels and their positions, searched
                order = np.argsort(self._labels, kind="stable")
                self._table = np.stack([self._labels[order], order])
        table = self._table
        if table.ndim == 1:
            inside = (labels >= 0) & (labels < len(table))
            return np.where(inside, table[np.where(inside, labels, 0)], -1)
        keys, order = table
        at = np.minimum(np.searchsorted(keys, labels), len(keys) - 1)
        return np.where(keys[at] == labels, order[at], -1) if len(keys) else np.full(len(labels), -1)

    def close(self) -> None:
        self._vecs = self._labels = None  # type: ignore[assignment]
        self._table = self._scores = None
        try:
            self._map.close()
        except BufferError:  # a caller still holds a view: the GC unmaps it later
            pass
