"""Nearest-neighbour search over the vectors of one (space, model).

The catalogue (SQLite) keeps every vector and is the source of truth. It is
reached only through the small ``VectorSource`` protocol below. Per (space,
model) an hnswlib file in the ann directory is a *derived cache*: it may be
missing, stale, truncated or garbage and search still answers correctly,
because:

* the file is trusted only when it matches the catalogue's state row
  (size, checksum, header, dimension, model, element count) and the
  checksum is verified BEFORE hnswlib sees the bytes, so a corrupt file never
  reaches hnswlib (whose loader can crash on bad input). Anything invalid is
  rebuilt from the catalogue and re-checkpointed;
* vectors committed after the checkpoint (ids > ``max_vector_id`` of the
  state row) are searched exactly and merged with the ANN results;
* vectors deleted from the catalogue since the checkpoint are marked deleted
  in the loaded index, so they are never returned.

Below ``EXACT_THRESHOLD`` live vectors no ANN is built: the vectors are held
in memory and searched by brute force.

A reader opened with ``mapped=True`` (a process that asks one query: ``xmr
search``) validates the file the same way but memory-maps it and scans its
vectors exactly (``xmr.mapped_index``) instead of loading the graph, which
would cost ~15x the scan; deletions and the tail are applied as above.

Checkpoint protocol (``VectorStore.checkpoint``): written to a temporary file
in the same directory, fsynced, ``os.replace``d over the old file, directory
fsynced, and only then the state row is put. The file holds no deletion marks
(deletions are re-derived from the live-id set at every open); its
``deleted_count`` says how many of its elements were no longer live at
checkpoint time, and once that exceeds a quarter of the elements the next
checkpoint rebuilds from scratch.

Concurrency: writers (checkpoints, rebuilds) are serialised by an flock on
``<file>.build.lock``; the replace + state put happens under an exclusive
flock on ``<file>.swap.lock`` and readers read the state row and open the file
under a shared one, so what a reader hashes is exactly the file the state row
describes. The open descriptor is what gets loaded (``/proc/self/fd``), so a
concurrent ``os.replace`` cannot swap the bytes between hashing and loading.
Where flock is unavailable a mismatch is retried before the file is judged
invalid.

What the catalogue must guarantee (see ``VectorSource``): ids are assigned
from a monotonically increasing counter and never reused (SQLite
AUTOINCREMENT), a stored vector never changes (re-embedding gives new ids),
and vectors are L2-normalised float32.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from xmr import paths
from xmr.errors import CatalogueError, UsageError, write_failure
from xmr.mapped_index import MappedIndex

try:  # POSIX only; elsewhere readers fall back to retrying on mismatch
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# Below this many live vectors the store searches exactly and builds no ANN.
# Measured with `benchmarks/search.py --crossover` (all runs in
# benchmarks/results/search.txt) on the shared 2-core dev machine (Xeon,
# numpy 1.26 / OpenBLAS, 512-d clustered vectors): single-query latency at
# k=10 through VectorStore.search, p50 over 2x200 queries, exact mode vs HNSW
# mode with the default params (M=16, efC=200, ef=200); ms, exact / hnsw:
#   n       1000       2000       3000       4000       5000       8000
#   run a   .068/.177  .102/.202  .176/.250  .230/.281  -          .432/.311
#   run b   .100/.139  .217/.214  .184/.279  .388/.269  -          -
#   run c   -          .106/.202  .184/.257  .387/.286  .468/.308  .698/.309
#   run d   -          .217/.206  .306/.254  .386/.286  .458/.286  .703/.325
# The curves cross between 2k and 5k (exact time is bimodal near 2k: the
# matrix, 2 KB a vector, leaves the cache); ~3k is the median crossing. Below
# it the difference is < 0.1 ms either way, and exact search is exact.
EXACT_THRESHOLD = 3000

# Share of a file's elements that may be deleted before a checkpoint rebuilds.
REBUILD_DELETED_FRACTION = 0.25

# A candidate subset at most this large (or under SUBSET_EXACT_FRACTION of the
# index) is searched exactly via get_items: cheaper than a filtered HNSW walk,
# which must expand ~ef/fraction nodes through a Python callback.
SUBSET_EXACT_MAX = 20_000
SUBSET_EXACT_FRACTION = 0.02

# A candidate subset at least this large a share of the index (a segment kind, typically) is
# searched by one unfiltered query for OVERFETCH_FACTOR * k / share neighbours, filtered after:
# far cheaper than get_items (~40 us a vector) or a Python filter callback per visited node.
OVERFETCH_MIN_SHARE = 0.05
OVERFETCH_FACTOR = 2.0

STATE_FORMAT = 1
METRIC = "ip"  # vectors are L2-normalised, so inner product == cosine
_HEADER = struct.Struct("<QQQQQQiIQQQdQ")  # hnswlib 0.8 saveIndex header (96 bytes)
_HASH_CHUNK = 64 << 20
_READ_PIECE = 8 << 20
_QUERY_CHUNK = 1024
_EXACT_BATCH = 20_000


@dataclass(frozen=True)
class HnswParams:
    """HNSW build/search parameters.

    Measured with benchmarks/search.py on 512-d clustered synthetic vectors
    (results/search.txt), M=16, ef_construction=200, recall@10 vs exact:

        ef      64      100     150     200     256
        10k     0.9995  1.0     1.0     1.0     1.0
        100k    0.9955  0.998   1.0     1.0     1.0
        1M      0.905   0.950   0.974   0.9785  0.9855   (p50 1.14 ms at ef=200)

    A second 1M build gave 0.9435 at ef=100 and 0.963 at ef=150 (builds are
    multi-threaded, so graphs differ run to run): ef=100 is not enough at 1M,
    150 clears 0.95 by little, so ef_search=200 (0.9785, +0.2 ms over 150)
    leaves margin for real embeddings, which are less clustered than the
    synthetic set. ef grows with k: ef = max(ef_search, k). Build cost on the
    2-core machine: 100k in 17 s idle (raw hnswlib) / 41 s through
    checkpoint at load ~4; 1M in 854 s at load ~4.5 (1417 s in a run at
    load ~7). The file is ~2.1 KB a vector.
    """

    M: int = 16
    ef_construction: int = 200
    ef_search: int = 200
    seed: int = 100


DEFAULT_PARAMS = HnswParams()


@runtime_checkable
class VectorSource(Protocol):
    """What the vector store needs from the catalogue, per (space, model_id).

    Guarantees the catalogue must give:

    * ids are positive and assigned from a monotonically increasing counter
      that never reuses an id (SQLite ``AUTOINCREMENT``); a committed vector
      is never modified in place (re-embedding deletes and inserts anew);
    * a transaction commits ids above every previously committed id (true for
      SQLite's single writer), so ``ids > max_vector_id`` is "new since";
    * vectors are float32, L2-normalised, shape (n, dim).
    """

    def vector_count(self, space: str, model_id: str) -> int:
        """Number of live vectors. Called on every search, so keep it indexed."""
        ...

    def max_vector_id(self, space: str, model_id: str) -> int:
        """Highest id ever assigned to this (space, model), 0 if none; never decreases.

        Returning the highest *live* id also works, but deleting the newest
        vectors then looks like a catalogue reset and forces a rebuild.
        """
        ...

    def iter_vectors(
        self, space: str, model_id: str, *, after_id: int = 0, batch: int = 20000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Live vectors with id > after_id in ascending id order, as non-empty
        batches of at most ``batch`` rows: (ids int64 (n,), vectors float32 (n, dim))."""
        ...

    def live_vector_ids(self, space: str, model_id: str) -> np.ndarray:
        """Every live id, int64, sorted ascending."""
        ...

    def get_ann_state(self, space: str, model_id: str) -> dict | None:
        """The state row last put for this (space, model), or None."""
        ...

    def put_ann_state(self, space: str, model_id: str, state: dict) -> None:
        """Store (replace) the state row; ``state`` is JSON-serialisable."""
        ...


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


def index_file_name(space: str, model_id: str) -> str:
    """File name of the ANN cache for (space, model): readable and collision-free."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{space}--{model_id}")[:64]
    digest = hashlib.blake2b(f"{space}\0{model_id}".encode(), digest_size=5).hexdigest()
    return f"{slug}-{digest}.hnsw"


def _hnswlib_version() -> str:
    try:
        return metadata.version("hnswlib")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def file_checksum(path: str | os.PathLike[str]) -> str:
    """Checksum of a file's bytes as stored in the state row (see ``_checksum_fd``)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        return _checksum_fd(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _pread(fd: int, n: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows
    return os.read(fd, n)


def _checksum_fd(fd: int, size: int) -> str:
    """blake2b tree hash: blake2b over (size, blake2b of each 64 MiB chunk).

    The chunks hash in parallel threads (pread and blake2b release the GIL),
    which halves the check of a 2 GB index on two cores (~0.8 GB/s per core).
    """

    def chunk_digest(i: int) -> bytes:
        h = hashlib.blake2b(digest_size=32)
        off, end = i * _HASH_CHUNK, min(size, (i + 1) * _HASH_CHUNK)
        while off < end:
            piece = _pread(fd, min(_READ_PIECE, end - off), off)
            if not piece:
                raise OSError("file shrank while hashing")
            h.update(piece)
            off += len(piece)
        return h.digest()

    n_chunks = max(1, -(-size // _HASH_CHUNK))
    # threads only where pread exists (no shared file offset to race on)
    workers = min(n_chunks, os.cpu_count() or 1, 4) if hasattr(os, "pread") else 1
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            digests = list(ex.map(chunk_digest, range(n_chunks)))
    else:
        digests = [chunk_digest(i) for i in range(n_chunks)]
    top = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=32)
    for d in digests:
        top.update(d)
    return "blake2b-tree64m:" + top.hexdigest()


def _check_header(raw: bytes, *, dim: int, element_count: int, file_size: int) -> str | None:
    """Why an hnswlib 0.8 file header does not describe ``element_count`` vectors of ``dim``.

    hnswlib does not store the dimension and loads a wrong-dim file without a
    word (then reads past each element), so the layout is checked here.
    """
    if len(raw) < _HEADER.size:
        return "file shorter than its header"
    (off0, _max_el, cur, size_per, label_off, off_data, max_level, entry, max_m, max_m0, m, _mult, efc) = (
        _HEADER.unpack(raw[: _HEADER.size])
    )
    links0 = max_m0 * 4 + 4
    if off0 != 0 or off_data != links0 or max_m0 != 2 * m or max_m != m or not 2 <= m <= 4096:
        return "header is not an hnswlib index"
    if size_per != links0 + dim * 4 + 8 or label_off != links0 + dim * 4:
        stored = (size_per - links0 - 8) / 4
        return f"index holds {stored:g}-d vectors, expected {dim}"
    if cur != element_count:
        return f"index holds {cur} elements, state says {element_count}"
    if not 0 <= max_level < 64 or (cur and entry >= cur) or efc < 1:
        return "header values out of range"
    if file_size < _HEADER.size + cur * (size_per + 4):
        return "file shorter than its elements"
    return None


def _short_write_errno(fd: int, missing: int) -> int:
    """Why a write came out short: no room left (ENOSPC) or something else (EIO)."""
    try:
        st = os.fstatvfs(fd)
        return errno.ENOSPC if st.f_bavail * st.f_frsize < max(missing, st.f_frsize) else errno.EIO
    except OSError:
        return errno.EIO


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be fsynced elsewhere
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _flock(path: Path, exclusive: bool, *, create: bool) -> Iterator[bool]:
    """Hold an flock on ``path``; yields False (no lock) where that is impossible."""
    if fcntl is None:
        yield False
        return
    try:
        fd = paths.open_private(path, (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY)
    except OSError:  # read-only directory or no lock file yet: go on unlocked
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def _topk(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k per row of ``sims`` (m, n), descending; ``ids`` is (n,) or (m, n)."""
    m, n = sims.shape
    kk = min(k, n)
    if kk <= 0:
        return np.empty((m, 0), np.int64), np.empty((m, 0), np.float32)
    if kk < n:
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(n), (m, n))
    psims = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-psims, axis=1, kind="stable")
    sel = np.take_along_axis(part, order, axis=1)
    out_ids = ids[sel] if ids.ndim == 1 else np.take_along_axis(ids, sel, axis=1)
    return out_ids.astype(np.int64, copy=False), np.take_along_axis(psims, order, axis=1).astype(np.float32)


def _in_sorted(members: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which of ``values`` (any shape) are in ``members`` (sorted, non-empty), by binary search."""
    pos = np.minimum(np.searchsorted(members, values), len(members) - 1)
    return members[pos] == values


def sorted_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The ids in both of two sorted, duplicate-free arrays (as ``np.intersect1d``), without
    sorting their concatenation: a search of the smaller in the larger, O(n log m)."""
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    if len(small) == 0 or len(large) == 0:
        return small[:0].astype(np.int64)
    return small[_in_sorted(large, small)].astype(np.int64, copy=False)


def _merge(parts: list[tuple[np.ndarray, np.ndarray]], m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    parts = [p for p in parts if p[0].shape[1]]
    if not parts:
        return np.empty((m, 0), np.int64), np.empty((m, 0), np.float32)
    if len(parts) == 1:
        return parts[0][0][:, :k], parts[0][1][:, :k]
    ids = np.concatenate([p[0] for p in parts], axis=1)
    sims = np.concatenate([p[1] for p in parts], axis=1)
    return _topk(sims, ids, k)


def _exact_block(queries: np.ndarray, vecs: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of every query against an in-memory block, queries chunked."""
    m = len(queries)
    if len(ids) == 0 or k <= 0:
        return np.empty((m, 0), np.int64), np.empty((m, 0), np.float32)
    out = [_topk(queries[s : s + _QUERY_CHUNK] @ vecs.T, ids, k) for s in range(0, m, _QUERY_CHUNK)]
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


class VectorStore:
    """Search over the vectors of one (space, model): exact when small, HNSW otherwise.

    Opens lazily at the first search. Not shareable across processes (each
    opens its own); within a process, calls are serialised by a lock.
    """

    def __init__(
        self,
        directory: Path,
        source: VectorSource,
        space: str,
        model_id: str,
        dim: int,
        *,
        exact_threshold: int = EXACT_THRESHOLD,
        params: HnswParams = DEFAULT_PARAMS,
        num_threads: int = -1,
        readonly: bool = False,
        mapped: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.source = source
        self.space = space
        self.model_id = model_id
        self.dim = int(dim)
        self.exact_threshold = int(exact_threshold)
        self.params = params
        self.num_threads = num_threads
        # a reader (search) never writes: an unusable file is answered exactly, not rebuilt
        self.readonly = readonly
        # a reader that asks one query maps the file and scans it (exact) instead of loading
        # the graph, which costs ~15x one scan (xmr/mapped_index.py)
        self.mapped = mapped and readonly
        self.degraded: str | None = None
        self.path = self.directory / index_file_name(space, model_id)
        self._mutex = threading.RLock()
        self._reset()
        self.last_rebuild_reason: str | None = None
        self.last_error: str | None = None
        self._mem_index: Any = None
        self._mem_state: dict | None = None

    # ------------------------------------------------------------------ public

    def search(
        self, queries: np.ndarray, k: int, *, candidate_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k cosine similarities per query: (ids int64 (m, k'), sims float32 (m, k')).

        k' = min(k, live vectors [in candidate_ids]); a k beyond that is not an
        error. ``candidate_ids`` restricts the search to those vector ids.
        """
        q = self._queries(queries)
        if k < 0:
            raise UsageError(f"k must be >= 0, got {k}")
        cand = self._candidates(candidate_ids)
        m = len(q)
        with self._mutex:
            self._ensure_open()
            if self._mode == "exact":
                ids, vecs = self._ids, self._vecs
                if cand is not None:
                    keep = np.isin(ids, cand, assume_unique=True)
                    ids, vecs = ids[keep], vecs[keep]
                return _exact_block(q, vecs, ids, k)
            parts = [self._ann_part(q, k, cand)]
            if len(self._tail_ids):
                ids, vecs = self._tail_ids, self._tail_vecs
                if cand is not None:
                    keep = np.isin(ids, cand, assume_unique=True)
                    ids, vecs = ids[keep], vecs[keep]
                parts.append(_exact_block(q, vecs, ids, k))
            return _merge(parts, m, k)

    def exact_search(
        self, queries: np.ndarray, k: int, *, candidate_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over every live vector, streamed from the source in batches
        (memory stays at one batch whatever the size). Same result shape as search."""
        q = self._queries(queries)
        if k < 0:
            raise UsageError(f"k must be >= 0, got {k}")
        cand = self._candidates(candidate_ids)
        m = len(q)
        best = (np.empty((m, 0), np.int64), np.empty((m, 0), np.float32))
        if k == 0:
            return best
        for ids, vecs in self.source.iter_vectors(self.space, self.model_id, after_id=0, batch=_EXACT_BATCH):
            self._check_batch(vecs)
            if cand is not None:
                keep = np.isin(ids, cand)
                ids, vecs = ids[keep], vecs[keep]
            best = _merge([best, _exact_block(q, vecs, np.asarray(ids, np.int64), k)], m, k)
        return best

    def checkpoint(self) -> dict:
        """Make the ANN file reflect everything in the source; returns the state row put.

        Incremental (new vectors added to the existing file) unless the file is
        invalid or more than a quarter of its elements are deleted, then a
        full rebuild. Below the exact threshold the file is removed instead.
        Raises CatalogueError when the file cannot be written.
        """
        with self._mutex:
            try:
                paths.make_private_dir(self.directory)
                with _flock(self._lock_path("build"), True, create=True) as locked:
                    return self._checkpoint_locked(locked)
            except OSError as e:
                self._reset()
                mapped = write_failure(e, self.path, "saving the vector index (the catalogue is complete)")
                raise mapped or CatalogueError(f"cannot write the ANN index: {e}", path=self.path) from e
            except BaseException:
                self._reset()  # in-memory index may be half-updated: reopen from disk
                raise

    def refresh(self) -> None:
        """Forget what is loaded; the next search re-opens and re-validates."""
        with self._mutex:
            self._reset()

    def close(self) -> None:
        self.refresh()

    def stats(self) -> dict[str, Any]:
        """What is loaded and what the state row says; opens nothing."""
        with self._mutex:
            state = self._state or self._safe_state()
            out: dict[str, Any] = {
                "space": self.space,
                "model_id": self.model_id,
                "dim": self.dim,
                "opened": self._opened,
                "mode": self._mode,
                "scan": isinstance(self._index, MappedIndex),
                "exact_threshold": self.exact_threshold,
                "params": {
                    "M": self.params.M,
                    "ef_construction": self.params.ef_construction,
                    "ef_search": self.params.ef_search,
                },
                "path": str(self.path),
                "file_exists": self.path.exists(),
                "state": state,
                "last_rebuild_reason": self.last_rebuild_reason,
                "last_error": self.last_error,
                "open_seconds": self._open_seconds,
            }
            if self._opened and self._mode == "exact":
                out["live_count"] = int(len(self._ids))
            elif self._opened:
                out.update(
                    live_count=int(len(self._index_live) + len(self._tail_ids)),
                    index_elements=int(len(self._index_ids)),
                    index_live=int(len(self._index_live)),
                    index_deleted=int(len(self._index_ids) - len(self._index_live)),
                    tail_count=int(len(self._tail_ids)),
                )
            return out

    # ---------------------------------------------------------------- opening

    def _reset(self) -> None:
        self._opened = False
        self._mode: str | None = None
        self._index: Any = None
        self._state: dict | None = None
        self._ids = np.empty(0, np.int64)  # exact mode: all live vectors
        self._vecs = np.empty((0, self.dim), np.float32)
        self._index_ids = np.empty(0, np.int64)  # ann mode: labels in the file (sorted)
        self._index_live = np.empty(0, np.int64)  # ...of which live
        self._tail_ids = np.empty(0, np.int64)  # ann mode: ids > state max, searched exactly
        self._tail_vecs = np.empty((0, self.dim), np.float32)
        self._loaded_max = 0  # every live id <= this is loaded (index or tail)
        self._seen = (-1, -1)  # (count, max id) of the source at the last sync
        self._open_seconds: float | None = None

    def _ensure_open(self) -> None:
        if self._opened:
            self._sync()
            return
        t0 = time.perf_counter()
        if self.source.vector_count(self.space, self.model_id) < self.exact_threshold:
            self._open_exact()
        else:
            self._open_ann()
        self._opened = True
        self._open_seconds = time.perf_counter() - t0

    def _open_exact(self) -> None:
        count = self.source.vector_count(self.space, self.model_id)
        mx = self.source.max_vector_id(self.space, self.model_id)
        ids, vecs = self._fetch(after_id=0)
        self._mode = "exact"
        self._ids, self._vecs = ids, vecs
        self._loaded_max = max(mx, int(ids[-1]) if len(ids) else 0)
        self._seen = (count, mx)

    def _open_ann(self) -> None:
        # a writer builds on the file, so it checks every byte (a flipped bit would
        # otherwise be re-checksummed into the next checkpoint); a reader checks what is cheap
        index, state, why = self._load_valid(full=not self.readonly)
        if index is None and self.readonly:
            self.degraded = why
            self._open_exact()
            return
        if index is None:
            # Serialise with other writers, then look again: another process
            # may have rebuilt it while we waited.
            with contextlib.suppress(OSError):
                paths.make_private_dir(self.directory)
            with _flock(self._lock_path("build"), True, create=True) as locked:
                index, state, _ = self._load_valid(full=True)
                if index is None:
                    self.last_rebuild_reason = why
                    self._mem_index = self._mem_state = None
                    try:
                        self._checkpoint_locked(locked, force_rebuild=why)
                        return
                    except Exception as e:
                        if self._mem_index is None or self._mem_state is None:
                            raise  # the source itself failed: nothing to search
                        # Unwritable directory, read-only or busy catalogue: the
                        # rebuilt index is complete, so search from memory.
                        self.last_error = f"could not checkpoint the rebuilt index: {e}"
                        index, state = self._mem_index, self._mem_state
                        self._mem_index = self._mem_state = None
        self._install(index, state)

    def _load_valid(self, *, full: bool) -> tuple[Any, dict | None, str]:
        """(index, state, "") for a valid file, else (None, state, why)."""
        why = "no state"
        state = None
        for attempt in range(3):
            with _flock(self._lock_path("swap"), False, create=False) as locked:
                state = self._safe_state()
                why, fd, size = self._precheck(state)
                if fd is None:
                    return None, state, why
                try:
                    why = self._verify_fd(fd, size, state, full=full)
                    if not why:
                        index, why = self._map_fd(fd, size, state) if self.mapped else self._load_fd(fd, state)
                        why = why or self._ids_reused(index, state)
                        if not why:
                            return index, state, ""
                finally:
                    os.close(fd)
            if locked or not why.startswith("checksum"):
                break
            time.sleep(0.05 * (attempt + 1))  # unlocked: maybe mid-replace, look again
        return None, state, why

    def _safe_state(self) -> dict | None:
        state = self.source.get_ann_state(self.space, self.model_id)
        return state if isinstance(state, dict) else None

    def _precheck(self, state: dict | None) -> tuple[str, int | None, int]:
        if state is None:
            return "no state row", None, 0
        if state.get("format") != STATE_FORMAT:
            return "state row of another format", None, 0
        if state.get("file") is None:
            return "no ANN file was checkpointed", None, 0
        expect = {
            "space": self.space,
            "model_id": self.model_id,
            "dim": self.dim,
            "metric": METRIC,
            "file": self.path.name,
        }
        for key, want in expect.items():
            if state.get(key) != want:
                return f"state {key} is {state.get(key)!r}, expected {want!r}", None, 0
        try:
            max_id = int(state["max_vector_id"])
            int(state["element_count"]), int(state["file_size"])
        except (KeyError, TypeError, ValueError):
            return "state row incomplete", None, 0
        if max_id > self.source.max_vector_id(self.space, self.model_id):
            return "catalogue is older than the index (reset or restored)", None, 0
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            return "index file missing", None, 0
        except OSError as e:
            return f"index file unreadable: {e}", None, 0
        return "", fd, os.fstat(fd).st_size

    def _verify_fd(self, fd: int, size: int, state: dict, *, full: bool = False) -> str:
        """Why the open file does not match its state row ("" when it does).

        On open only what is cheap: the size and the header (dimension, element
        count, layout), and after loading the newest vectors against the
        catalogue (``_ids_reused``). The whole-file checksum, written at every
        checkpoint, is verified by ``verify()`` (``xmr status --check``).
        """
        if size != int(state["file_size"]):
            return f"checksum: size {size} != {state['file_size']} (truncated or replaced)"
        try:
            if full and _checksum_fd(fd, size) != state.get("checksum"):
                return "checksum mismatch (corrupt or stale)"
            header = _pread(fd, _HEADER.size, 0)
        except OSError as e:
            return f"index file unreadable: {e}"
        return _check_header(header, dim=self.dim, element_count=int(state["element_count"]), file_size=size) or ""

    def cheap_problem(self) -> str:
        """What is wrong with the ANN file that costs nothing to see (size, header, state row), or ""."""
        with self._mutex:
            state = self._safe_state()
            if state is not None and state.get("file") is None:
                return "a vector index file exists without a state row" if self.path.exists() else ""
            why, fd, size = self._precheck(state)
            if fd is None:
                return why
            try:
                return self._verify_fd(fd, size, state)  # type: ignore[arg-type]
            finally:
                os.close(fd)

    def verify(self) -> str:
        """Full check of the ANN file against its state row: "" when sound, else what is wrong.

        Hashes the whole file (seconds at millions of vectors). A store that
        holds no ANN file (below the exact threshold) is sound.
        """
        with self._mutex:
            state = self._safe_state()
            if self.source.vector_count(self.space, self.model_id) < self.exact_threshold and (
                state is None or state.get("file") is None
            ):
                return ""
            with _flock(self._lock_path("swap"), False, create=False):
                return self._full_check()

    def _full_check(self) -> str:
        """The state row's checks and the whole file's checksum ("" when sound); the caller holds a swap lock."""
        state = self._safe_state()
        why, fd, size = self._precheck(state)
        if fd is None:
            return why
        try:
            return self._verify_fd(fd, size, state, full=True)  # type: ignore[arg-type]
        finally:
            os.close(fd)

    def discard_if_damaged(self) -> bool:
        """Remove the ANN file if, under the writers' swap lock, it still fails ``verify``.

        The lock and the second look keep a checkpoint that an index run swapped in since
        (a sound file) from being removed.
        """
        with self._mutex, _flock(self._lock_path("swap"), True, create=False):
            if not self._full_check() or not self.path.exists():
                return False
            self.path.unlink()
            return True

    def _load_fd(self, fd: int, state: dict) -> tuple[Any, str]:
        import hnswlib

        proc = f"/proc/self/fd/{fd}"
        use_proc = os.path.exists(proc)
        st = os.fstat(fd)
        count = int(state["element_count"])
        index = hnswlib.Index(space=METRIC, dim=self.dim)
        try:
            index.load_index(proc if use_proc else str(self.path), max_elements=count)
        except Exception as e:  # hnswlib raises RuntimeError/ValueError on bad files
            return None, f"hnswlib could not load the file: {e}"
        if not use_proc:
            try:
                same = os.stat(self.path).st_ino == st.st_ino
            except OSError:
                same = False
            if not same:
                return None, "checksum: file replaced while loading"
        if index.element_count != count or index.dim != self.dim or index.index_file_size() != st.st_size:
            return None, "loaded index does not match its state row"
        return index, ""

    def _map_fd(self, fd: int, size: int, state: dict) -> tuple[Any, str]:
        try:
            index = MappedIndex(fd, size, _HEADER, self.dim)
        except (OSError, ValueError) as e:
            return None, f"could not map the file: {e}"
        why = index.problem(int(state["max_vector_id"]))
        if why:
            index.close()
            return None, why
        return index, ""

    def _ids_reused(self, index: Any, state: dict) -> str:
        """Why the catalogue no longer holds, under the file's ids, the file's vectors.

        A catalogue that hands out max(id)+1 (SQLite INTEGER PRIMARY KEY without
        AUTOINCREMENT) reuses the ids of deleted newest rows. If any id <= the
        state's max_vector_id was reused, the highest live id <= it was too
        (every id above the reuse point had been deleted), so comparing the
        top few live ids with the file detects reuse at the cost of one query.
        """
        state_max = int(state["max_vector_id"])
        ids = vecs = None
        for window in (64, 4096):
            ids, vecs = self._fetch(after_id=max(0, state_max - window), batch=window, until=state_max)
            if len(ids):
                break
        else:  # no live id near the top: look up the highest ones (rare)
            live = self.source.live_vector_ids(self.space, self.model_id)
            live = live[live <= state_max][-8:]
            if not len(live):
                return ""
            parts = [self._fetch(after_id=int(i) - 1, batch=1, until=int(i)) for i in live]
            ids = np.concatenate([p[0] for p in parts])
            vecs = np.concatenate([p[1] for p in parts])
        ids, vecs = ids[-8:], vecs[-8:]
        try:
            stored = np.asarray(index.get_items(ids), dtype=np.float32)
        except RuntimeError:  # a live id <= max that the file does not hold
            return "catalogue ids do not match the index (ids reused or catalogue replaced)"
        if not np.array_equal(stored, vecs):
            return "catalogue vectors differ from the index under the same ids (ids reused)"
        return ""

    def _install(self, index: Any, state: dict) -> None:
        """Take a verified index: derive deletions and the exact tail from the source."""
        count = self.source.vector_count(self.space, self.model_id)
        mx = self.source.max_vector_id(self.space, self.model_id)
        labels = np.sort(np.asarray(index.get_ids_list(), dtype=np.int64))
        state_max = int(state["max_vector_id"])
        live = self.source.live_vector_ids(self.space, self.model_id)
        gone = np.setdiff1d(labels, live, assume_unique=True)
        for label in gone.tolist():
            index.mark_deleted(label)
        tail_ids, tail_vecs = self._fetch(after_id=state_max)
        self._mode = "ann"
        self._index, self._state = index, state
        self._index_ids = labels
        self._index_live = np.setdiff1d(labels, gone, assume_unique=True)
        self._tail_ids, self._tail_vecs = tail_ids, tail_vecs
        self._loaded_max = max(mx, state_max, int(tail_ids[-1]) if len(tail_ids) else 0)
        self._seen = (count, mx)

    def _sync(self) -> None:
        """Bring the loaded view up to date with commits and deletions since it was taken."""
        count = self.source.vector_count(self.space, self.model_id)
        mx = self.source.max_vector_id(self.space, self.model_id)
        if (count, mx) == self._seen:
            return
        if mx < self._seen[1]:
            self._reset()  # catalogue went backwards (replaced): nothing loaded can be trusted
            self._ensure_open()
            return
        new_ids, new_vecs = self._fetch(after_id=self._loaded_max)
        if self._mode == "exact":
            self._ids = np.concatenate([self._ids, new_ids])
            self._vecs = np.concatenate([self._vecs, new_vecs])
            held = len(self._ids)
        else:
            self._tail_ids = np.concatenate([self._tail_ids, new_ids])
            self._tail_vecs = np.concatenate([self._tail_vecs, new_vecs])
            held = len(self._index_live) + len(self._tail_ids)
        self._loaded_max = max(mx, self._loaded_max, int(new_ids[-1]) if len(new_ids) else 0)
        if held != count:  # something was deleted: re-derive from the live ids
            live = self.source.live_vector_ids(self.space, self.model_id)
            if self._mode == "exact":
                keep = np.isin(self._ids, live, assume_unique=True)
                self._ids, self._vecs = self._ids[keep], self._vecs[keep]
            else:
                gone = np.setdiff1d(self._index_live, live, assume_unique=True)
                for label in gone.tolist():
                    self._index.mark_deleted(label)
                self._index_live = np.setdiff1d(self._index_live, gone, assume_unique=True)
                keep = np.isin(self._tail_ids, live, assume_unique=True)
                self._tail_ids, self._tail_vecs = self._tail_ids[keep], self._tail_vecs[keep]
        self._seen = (count, mx)

    def _fetch(
        self, after_id: int, *, batch: int = _EXACT_BATCH, until: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Live vectors with after_id < id (<= until), concatenated."""
        ids_parts, vec_parts = [], []
        with contextlib.closing(
            self.source.iter_vectors(self.space, self.model_id, after_id=after_id, batch=batch)
        ) as it:
            for ids, vecs in it:
                self._check_batch(vecs)
                ids = np.asarray(ids, np.int64)
                if until is not None and len(ids) and ids[-1] > until:
                    keep = ids <= until
                    ids_parts.append(ids[keep])
                    vec_parts.append(np.asarray(vecs, np.float32)[keep])
                    break
                ids_parts.append(ids)
                vec_parts.append(np.asarray(vecs, np.float32))
        if not ids_parts:
            return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        return np.concatenate(ids_parts), np.concatenate(vec_parts)

    def _check_batch(self, vecs: np.ndarray) -> None:
        if vecs.ndim != 2 or vecs.shape[1] != self.dim:
            raise CatalogueError(
                f"catalogue holds {vecs.shape[-1]}-d vectors for {self.space} model {self.model_id}, "
                f"expected {self.dim}"
            )

    # -------------------------------------------------------------- searching

    def _queries(self, queries: np.ndarray) -> np.ndarray:
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise UsageError(f"query vectors have shape {q.shape}, expected (m, {self.dim})")
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        # cosine needs unit queries; tolerate callers that forgot to normalise
        return np.ascontiguousarray(q / np.where(norms > 0, norms, 1.0), dtype=np.float32)

    @staticmethod
    def _candidates(candidate_ids: np.ndarray | None) -> np.ndarray | None:
        if candidate_ids is None:
            return None
        ids = np.asarray(candidate_ids, dtype=np.int64).ravel()
        # the cached group id arrays come sorted: checking is O(N), sorting 1M ids is ~60 ms
        if len(ids) < 2 or bool((ids[1:] > ids[:-1]).all()):
            return ids
        return np.unique(ids)

    def _ann_part(self, q: np.ndarray, k: int, cand: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        m = len(q)
        live = self._index_live
        if isinstance(self._index, MappedIndex):
            return self._index.search(q, k, live if cand is None else sorted_intersection(cand, live))
        filt = None
        if cand is not None:
            live = sorted_intersection(cand, live)
            share = len(live) / max(1, len(self._index_live))
            if share >= OVERFETCH_MIN_SHARE and len(live):
                # a large share: the filtered walk below needs only ~ef/share expansions when this misses
                found = self._overfetch(q, min(k, len(live)), live, share)
                if found is not None:
                    return found
            elif len(live) <= max(SUBSET_EXACT_MAX, SUBSET_EXACT_FRACTION * len(self._index_live)):
                return self._exact_from_index(q, live, k)
            filt = set(live.tolist()).__contains__
        kk = min(k, len(live))
        if kk == 0:
            return np.empty((m, 0), np.int64), np.empty((m, 0), np.float32)
        for ef in (max(self.params.ef_search, kk), max(4 * self.params.ef_search, 2 * kk)):
            self._index.set_ef(ef)
            try:
                # a Python filter is called under the GIL: threads would only contend
                labels, dist = self._index.knn_query(q, k=kk, num_threads=1 if filt else self.num_threads, filter=filt)
            except RuntimeError:  # fewer than kk reachable; retry wider, then exact
                continue
            return labels.astype(np.int64), (1.0 - dist).astype(np.float32)
        return self._exact_from_index(q, live, k)

    def _overfetch(
        self, q: np.ndarray, kk: int, members: np.ndarray, share: float
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Top ``kk`` among ``members`` (sorted ids, a large share of the index) from one unfiltered
        query for ``OVERFETCH_FACTOR * kk / share`` neighbours; None when some row got too few."""
        fetch = min(len(self._index_live), int(OVERFETCH_FACTOR * kk / share) + 16)
        self._index.set_ef(max(self.params.ef_search, fetch))
        try:
            labels, dist = self._index.knn_query(q, k=fetch, num_threads=self.num_threads)
        except RuntimeError:
            return None
        labels = labels.astype(np.int64)
        hit = _in_sorted(members, labels)
        if (hit.sum(axis=1) < kk).any():
            return None
        order = np.argsort(~hit, axis=1, kind="stable")[:, :kk]  # members first, in rank order
        return np.take_along_axis(labels, order, axis=1), (1.0 - np.take_along_axis(dist, order, axis=1)).astype(
            np.float32
        )

    def _exact_from_index(self, q: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over ``ids`` (live labels of the loaded index), vectors via get_items."""
        m = len(q)
        best = (np.empty((m, 0), np.int64), np.empty((m, 0), np.float32))
        for s in range(0, len(ids), _EXACT_BATCH):
            chunk = ids[s : s + _EXACT_BATCH]
            vecs = np.asarray(self._index.get_items(chunk), dtype=np.float32)
            best = _merge([best, _exact_block(q, vecs, chunk, k)], m, k)
        return best

    # ------------------------------------------------------------ checkpoint

    def _lock_path(self, kind: str) -> Path:
        return self.directory / f"{self.path.name}.{kind}.lock"

    def _checkpoint_locked(self, locked: bool, force_rebuild: str | None = None) -> dict:
        """Checkpoint while holding the build lock; installs the result in memory."""
        import hnswlib

        if locked:  # no other writer is live, so any temp file is a crashed one's
            for p in self.directory.glob(f".{self.path.name}.*.tmp"):
                with contextlib.suppress(OSError):
                    p.unlink()
        count = self.source.vector_count(self.space, self.model_id)
        prev = self._safe_state()
        generation = int(prev.get("generation", 0)) + 1 if prev else 1
        if count < self.exact_threshold:
            return self._checkpoint_exact(prev, generation)

        mx0 = self.source.max_vector_id(self.space, self.model_id)
        index, reason = None, force_rebuild
        if reason is None:
            held = self._index is not None and not isinstance(self._index, MappedIndex)
            if self._opened and self._mode == "ann" and self._state == prev and held:
                index = self._index  # what we hold is what the file holds: skip re-reading it
                for label in np.setdiff1d(self._index_ids, self._index_live, assume_unique=True).tolist():
                    index.unmark_deleted(label)  # the file carries no deletion marks
            else:
                index, _, reason = self._load_valid(full=True)
        self._reset()  # the in-memory view is rebuilt below
        added = 0
        if index is not None:
            after = int(prev["max_vector_id"])
            max_added = after
            for ids, vecs in self.source.iter_vectors(self.space, self.model_id, after_id=after):
                self._check_batch(vecs)
                self._grow(index, index.element_count + len(ids))
                index.add_items(
                    np.ascontiguousarray(vecs, np.float32), np.asarray(ids, np.int64), num_threads=self.num_threads
                )
                added += len(ids)
                max_added = int(ids[-1])
            labels = np.sort(np.asarray(index.get_ids_list(), dtype=np.int64))
            live = self.source.live_vector_ids(self.space, self.model_id)
            deleted = len(np.setdiff1d(labels, live, assume_unique=True))
            if deleted > REBUILD_DELETED_FRACTION * len(labels):
                reason = f"{deleted} of {len(labels)} elements deleted"
                index = None
        if index is None:
            self.last_rebuild_reason = reason
            index = hnswlib.Index(space=METRIC, dim=self.dim)
            index.init_index(
                max_elements=max(count, 1),
                M=self.params.M,
                ef_construction=self.params.ef_construction,
                random_seed=self.params.seed,
            )
            max_added = 0
            for ids, vecs in self.source.iter_vectors(self.space, self.model_id, after_id=0):
                self._check_batch(vecs)
                self._grow(index, index.element_count + len(ids))
                index.add_items(
                    np.ascontiguousarray(vecs, np.float32), np.asarray(ids, np.int64), num_threads=self.num_threads
                )
                max_added = int(ids[-1])
            added = index.element_count
            labels = np.sort(np.asarray(index.get_ids_list(), dtype=np.int64))
            live = self.source.live_vector_ids(self.space, self.model_id)
            deleted = len(np.setdiff1d(labels, live, assume_unique=True))
            mode = "full"
        else:
            mode = "incremental"
        state = {
            **self._state_base(generation),
            "file": self.path.name,
            "element_count": int(index.element_count),
            "deleted_count": int(deleted),
            "max_vector_id": int(max(mx0, max_added, int(prev["max_vector_id"]) if mode == "incremental" else 0)),
            "M": self.params.M,
            "ef_construction": self.params.ef_construction,
            "hnswlib": _hnswlib_version(),
            "build": mode,
            "added": int(added),
            "written_at": time.time(),
        }
        # Held so a search can go on from memory if writing fails.
        self._mem_index, self._mem_state = index, dict(state)
        size, checksum = self._atomic_save(index, state)
        state.update(file_size=size, checksum=checksum)
        self._mem_index = self._mem_state = None
        self._install(index, state)
        self._opened = True
        return state

    def _state_base(self, generation: int) -> dict:
        """The fields every state row has, whatever the build."""
        return {
            "format": STATE_FORMAT,
            "generation": generation,
            "space": self.space,
            "model_id": self.model_id,
            "dim": self.dim,
            "metric": METRIC,
        }

    def _checkpoint_exact(self, prev: dict | None, generation: int) -> dict:
        state = {
            **self._state_base(generation),
            "file": None,
            "element_count": 0,
            "deleted_count": 0,
            "file_size": 0,
            "checksum": None,
            "max_vector_id": self.source.max_vector_id(self.space, self.model_id),
            "exact_threshold": self.exact_threshold,
            "hnswlib": _hnswlib_version(),
            "build": "exact",
            "written_at": time.time(),
        }
        with _flock(self._lock_path("swap"), True, create=True):
            if self.path.exists():
                self.path.unlink()
                _fsync_dir(self.directory)
            self.source.put_ann_state(self.space, self.model_id, state)
        self._reset()
        return state

    def _atomic_save(self, index: Any, state: dict) -> tuple[int, str]:
        tmp = self.directory / f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            paths.create_private_file(tmp)  # hnswlib's writer keeps the mode of an existing file
            index.save_index(str(tmp))
            fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
            try:
                os.fsync(fd)
                size = os.fstat(fd).st_size
                if size != index.index_file_size():  # hnswlib does not check its writes
                    raise OSError(_short_write_errno(fd, index.index_file_size() - size), "short write", str(tmp))
                checksum = _checksum_fd(fd, size)
            finally:
                os.close(fd)
            with _flock(self._lock_path("swap"), True, create=True):
                os.replace(tmp, self.path)
                _fsync_dir(self.directory)
                self.source.put_ann_state(self.space, self.model_id, {**state, "file_size": size, "checksum": checksum})
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return size, checksum

    @staticmethod
    def _grow(index: Any, needed: int) -> None:
        if needed > index.max_elements:  # geometric: resize copies the whole graph
            index.resize_index(max(needed, int(index.max_elements * 1.5)))
