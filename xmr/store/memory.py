"""An in-memory ``VectorSource`` with the catalogue's guarantees (tests and benchmarks)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np


class MemoryVectorSource:
    """Reference, in-memory implementation of ``VectorSource`` (tests, benchmarks).

    It keeps the catalogue's guarantees: one id counter shared by all spaces,
    ids never reused, vectors immutable, ``max_vector_id`` never decreasing,
    and state rows stored as JSON text (so a state that is not serialisable
    fails here as it would in SQLite).
    """

    def __init__(self) -> None:
        self._next_id = 1
        self._cols: dict[tuple[str, str], _Columns] = {}
        self._states: dict[tuple[str, str], str] = {}
        self._settings: dict[str, str] = {}

    def add(self, space: str, model_id: str, vectors: np.ndarray) -> np.ndarray:
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.ndim != 2:
            raise ValueError("vectors must be 2-D")
        ids = np.arange(self._next_id, self._next_id + len(vecs), dtype=np.int64)
        self._next_id += len(vecs)
        self._cols.setdefault((space, model_id), _Columns()).append(ids, vecs)
        return ids

    def delete(self, space: str, model_id: str, ids: np.ndarray | list[int]) -> int:
        cols = self._cols.get((space, model_id))
        return 0 if cols is None else cols.delete(np.asarray(ids, dtype=np.int64))

    def vector_count(self, space: str, model_id: str) -> int:
        cols = self._cols.get((space, model_id))
        return 0 if cols is None else cols.count

    def max_vector_id(self, space: str, model_id: str) -> int:
        cols = self._cols.get((space, model_id))
        return 0 if cols is None else cols.max_id

    def iter_vectors(
        self, space: str, model_id: str, *, after_id: int = 0, batch: int = 20000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        cols = self._cols.get((space, model_id))
        if cols is None:
            return
        ids, vecs, live = cols.arrays()
        start = int(np.searchsorted(ids, after_id, side="right"))
        pos = np.flatnonzero(live[start:]) + start
        for s in range(0, len(pos), batch):
            sel = pos[s : s + batch]
            if sel[-1] - sel[0] + 1 == len(sel):  # contiguous: a view, no copy
                yield ids[sel[0] : sel[-1] + 1], vecs[sel[0] : sel[-1] + 1]
            else:
                yield ids[sel], vecs[sel]

    def live_vector_ids(self, space: str, model_id: str) -> np.ndarray:
        cols = self._cols.get((space, model_id))
        if cols is None:
            return np.empty(0, dtype=np.int64)
        ids, _, live = cols.arrays()
        return ids[live]

    def get_ann_state(self, space: str, model_id: str) -> dict | None:
        text = self._states.get((space, model_id))
        return None if text is None else json.loads(text)

    def put_ann_state(self, space: str, model_id: str, state: dict) -> None:
        self._states[(space, model_id)] = json.dumps(state, sort_keys=True)

    # the catalogue's settings table, where the vector backend's name is recorded
    def get_setting(self, key: str) -> str | None:
        return self._settings.get(key)

    def set_setting(self, key: str, value: str) -> None:
        self._settings[key] = value


class _Columns:
    """Append-only id/vector columns with a live mask (MemoryVectorSource)."""

    def __init__(self) -> None:
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = []
        self._ids = np.empty(0, dtype=np.int64)
        self._vecs: np.ndarray | None = None
        self._live = np.empty(0, dtype=bool)
        self.count = 0
        self.max_id = 0

    def append(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if len(ids):
            self._chunks.append((ids, vecs))
            self.count += len(ids)
            self.max_id = int(ids[-1])

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._chunks:
            parts = ([] if self._vecs is None else [(self._ids, self._vecs)]) + self._chunks
            self._ids = np.concatenate([p[0] for p in parts])
            self._vecs = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
            self._live = np.concatenate([self._live, np.ones(len(self._ids) - len(self._live), bool)])
            self._chunks = []
        vecs = self._vecs if self._vecs is not None else np.empty((0, 0), np.float32)
        return self._ids, vecs, self._live

    def delete(self, ids: np.ndarray) -> int:
        all_ids, _, live = self.arrays()
        ids = np.unique(ids)
        pos = np.searchsorted(all_ids, ids)
        inside = pos < len(all_ids)
        pos, ids = pos[inside], ids[inside]
        pos = pos[all_ids[pos] == ids]
        pos = pos[live[pos]]
        live[pos] = False
        self.count -= len(pos)
        return len(pos)
