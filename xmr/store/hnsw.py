"""The hnswlib backend of ``VectorIndex``: exact when small, an HNSW graph otherwise.

Per (space, model) an hnswlib file in the ann directory is a *derived cache*
of the catalogue: it may be missing, stale, truncated or garbage and search
still answers correctly, because:

* the file is trusted only when it matches the catalogue's state row
  (``hnsw_file``); anything invalid is rebuilt from the catalogue and
  re-checkpointed (a reader answers exactly instead and writes nothing);
* vectors committed after the checkpoint (ids > ``max_vector_id`` of the
  state row) are searched exactly and merged with the ANN results;
* vectors deleted from the catalogue since the checkpoint are marked deleted
  in the loaded index, so they are never returned.

Below ``EXACT_THRESHOLD`` live vectors no ANN is built: the vectors are held
in memory and searched by brute force.

A reader opened with ``mapped=True`` (a process that asks one query: ``xmr
search``) validates the file the same way but memory-maps it and scans its
vectors exactly (``xmr.store.mapped``) instead of loading the graph, which
would cost ~15x the scan; deletions and the tail are applied as above.

What the catalogue must guarantee is ``VectorSource``'s: ids never reused, a
stored vector never changes, vectors L2-normalised float32.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from xmr import paths
from xmr.errors import CatalogueError, UsageError, write_failure
from xmr.store.fsutil import flock
from xmr.store.hnsw_build import DEFAULT_PARAMS, HnswBuilder, HnswParams
from xmr.store.hnsw_file import METRIC, STATE_FORMAT, HnswFile, hnswlib_version
from xmr.store.hnsw_view import LoadedView
from xmr.store.mapped import MappedIndex
from xmr.store.source import VectorSource, check_batch
from xmr.store.topk import empty, exact_block, merge

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

_EXACT_BATCH = 20_000


class HnswStore:
    """Search over the vectors of one (space, model): exact when small, HNSW otherwise.

    Opens lazily at the first search. Not shareable across processes (each
    opens its own); within a process, calls are serialised by a lock.
    """

    backend = "hnswlib"

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
        self.file = HnswFile(directory, source, space, model_id, dim)
        self.space = space
        self.model_id = model_id
        self.dim = int(dim)
        self.exact_threshold = int(exact_threshold)
        self.params = params
        self.num_threads = num_threads
        # a reader (search) never writes: an unusable file is answered exactly, not rebuilt
        self.readonly = readonly
        # a reader that asks one query maps the file and scans it (exact) instead of loading
        # the graph, which costs ~15x one scan (xmr/store/mapped.py)
        self.mapped = mapped and readonly
        self.degraded: str | None = None
        self._mutex = threading.RLock()
        self._reset()
        self.last_rebuild_reason: str | None = None
        self.last_error: str | None = None
        self._mem_index: Any = None
        self._mem_state: dict | None = None

    @property
    def source(self) -> VectorSource:
        return self.file.source

    @source.setter
    def source(self, source: VectorSource) -> None:
        self.file.source = source

    @property
    def directory(self) -> Path:
        return self.file.directory

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def label(self) -> str:
        return self.file.path.name

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
        with self._mutex:
            self._ensure_open()
            return self._view.search(q, k, cand, self.params.ef_search, self.num_threads)

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
        best = empty(m)
        if k == 0:
            return best
        for ids, vecs in self.source.iter_vectors(self.space, self.model_id, after_id=0, batch=_EXACT_BATCH):
            self._check_batch(vecs)
            if cand is not None:
                keep = np.isin(ids, cand)
                ids, vecs = ids[keep], vecs[keep]
            best = merge([best, exact_block(q, vecs, np.asarray(ids, np.int64), k)], m, k)
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
                with flock(self.file.lock_path("build"), True, create=True) as locked:
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

    def problem(self) -> str:
        """Why the file needs a checkpoint, on a cheap look (no checksum: the checkpoint verifies
        fully): no state row for a non-empty space, a state behind the catalogue, a damaged size or
        header, or a crashed writer's temporary file. "" when up to date."""
        with self._mutex:
            state = self.file.state()
            if state is None:
                count = self.source.vector_count(self.space, self.model_id)
                return f"no state row for {count} vectors" if count > 0 else ""
            # the highest catalogue id the last checkpoint looked at: its file's, or beyond it where
            # the binary backend left newer vectors to the tail (BinaryStore._tail_can_wait)
            checked = state.get("checked_max_vector_id", state.get("max_vector_id", -1))
            if int(checked) != self.source.max_vector_id(self.space, self.model_id):
                return "the index is behind the catalogue"
            why = self.file.cheap_problem()
            if why:
                return why
            return "an unfinished write left a temporary file" if self.file.temp_files() else ""

    def verify(self) -> str:
        """Full check of the ANN file against its state row: "" when sound, else what is wrong.

        Hashes the whole file (seconds at millions of vectors). A store that
        holds no ANN file (below the exact threshold) is sound.
        """
        with self._mutex:
            state = self.file.state()
            if self.source.vector_count(self.space, self.model_id) < self.exact_threshold and (
                state is None or state.get("file") is None
            ):
                return ""
            with self.file.swap_lock(False, create=False):
                return self.file.full_check()

    def discard_if_damaged(self) -> bool:
        """Remove the ANN file if, under the writers' swap lock, it still fails ``verify``."""
        with self._mutex:
            return self.file.discard_if_damaged()

    def fallback(self) -> str:
        return self.degraded or ""

    def persisted(self) -> bool:
        return self.path.exists()

    def fingerprint(self) -> str:
        return self.file.fingerprint()

    def stats(self) -> dict[str, Any]:
        """What is loaded and what the state row says; opens nothing."""
        with self._mutex:
            state = self._view.state or self.file.state()
            out: dict[str, Any] = {
                "backend": self.backend,
                "space": self.space,
                "model_id": self.model_id,
                "dim": self.dim,
                "opened": self._opened,
                "mode": self._view.mode,
                "scan": isinstance(self._view.index, MappedIndex),
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
            if self._opened:
                out.update(self._view.counts())
            return out

    # ---------------------------------------------------------------- opening

    def _reset(self) -> None:
        self._opened = False
        self._view = LoadedView(self.space, self.model_id, self.dim)
        self._open_seconds: float | None = None

    @property
    def _index(self) -> Any:
        """The loaded graph (hnswlib.Index or MappedIndex), None in exact mode."""
        return self._view.index

    def _ensure_open(self) -> None:
        if self._opened:
            if not self._view.sync(self.source):
                self._reset()  # catalogue went backwards (replaced): nothing loaded can be trusted
                self._ensure_open()
            return
        t0 = time.perf_counter()
        if self.source.vector_count(self.space, self.model_id) < self.exact_threshold:
            self._open_exact()
        else:
            self._open_ann()
        self._opened = True
        self._open_seconds = time.perf_counter() - t0

    def _open_exact(self) -> None:
        self._view.load_exact(self.source)

    def _load_valid(self, *, full: bool) -> tuple[Any, dict | None, str]:
        return self.file.load_valid(full=full, mapped=self.mapped)

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
            with flock(self.file.lock_path("build"), True, create=True) as locked:
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
        self._install(index, state)  # type: ignore[arg-type]

    def _install(self, index: Any, state: dict) -> None:
        self._view.install(self.source, index, state)

    def _check_batch(self, vecs: np.ndarray) -> None:
        check_batch(vecs, self.space, self.model_id, self.dim)

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

    # ------------------------------------------------------------ checkpoint

    def _checkpoint_locked(self, locked: bool, force_rebuild: str | None = None) -> dict:
        """Checkpoint while holding the build lock; installs the result in memory."""
        if locked:  # no other writer is live, so any temp file is a crashed one's
            self.file.remove_temp_files()
        count = self.source.vector_count(self.space, self.model_id)
        prev = self.file.state()
        generation = int(prev.get("generation", 0)) + 1 if prev else 1
        if count < self.exact_threshold:
            return self._checkpoint_exact(generation)

        mx0 = self.source.max_vector_id(self.space, self.model_id)
        index, reason = None, force_rebuild
        if reason is None:
            index = self._view.reusable_index(prev) if self._opened else None  # skips re-reading the file
            if index is None:
                index, _, reason = self._load_valid(full=True)
        self._reset()  # the in-memory view is rebuilt below
        builder = HnswBuilder(
            self.source, self.space, self.model_id, self.dim, self.params, self.num_threads, self._check_batch
        )
        index, fields, reason = builder.build(index, prev, reason, count)
        if fields["build"] == "full":
            self.last_rebuild_reason = reason
        max_added = fields.pop("max_added")
        prev_max = int(prev["max_vector_id"]) if fields["build"] == "incremental" else 0  # type: ignore[index]
        state = {
            **self._state_base(generation),
            "file": self.path.name,
            "element_count": fields.pop("element_count"),
            "deleted_count": fields.pop("deleted_count"),
            "max_vector_id": int(max(mx0, max_added, prev_max)),
            **fields,
            "written_at": time.time(),
        }
        # Held so a search can go on from memory if writing fails.
        self._mem_index, self._mem_state = index, dict(state)
        size, checksum = self.file.save(index, state)
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

    def _checkpoint_exact(self, generation: int) -> dict:
        state = {
            **self._state_base(generation),
            "file": None,
            "element_count": 0,
            "deleted_count": 0,
            "file_size": 0,
            "checksum": None,
            "max_vector_id": self.source.max_vector_id(self.space, self.model_id),
            "exact_threshold": self.exact_threshold,
            "hnswlib": hnswlib_version(),
            "build": "exact",
            "written_at": time.time(),
        }
        self.file.remove(state)
        self._reset()
        return state
