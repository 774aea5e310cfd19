"""The ``binary`` backend of ``VectorIndex``: 1-bit codes ranked against the query, rescored exactly.

For spaces too large for an HNSW graph on one machine (10M vectors: a 22 GB
graph file that takes hours to build and must be loaded whole), it keeps the
float32 vectors in a flat file and beside them a 1-bit code per vector
(``xmr.store.codes``: signs after a centring and a rotation learned once), both
memory-mapped (``binary_file.py``). A search ranks the live codes against the
query (a Hamming prefilter, then the query's projections summed with each kept
code's signs: ``CodedSearch._ranked``), takes the best ``k * oversample`` and
rescores them exactly from the float32 rows, so the similarities returned are
exact and only the ranking's recall is approximate. It maps the same files whether one
query is asked (``xmr search``) or many (``xmr serve``): nothing is loaded but
the ids, and the pages a search touches are the codes and ``k * oversample``
rows.

Everything else is the hnswlib backend's (``HnswStore``, which this subclasses):
exact below the threshold, the tail of vectors added since the checkpoint
searched exactly, deletions applied from the catalogue's live ids, a reader
that never writes and answers exactly from the catalogue when the float32 file
is unusable, and from the float32 file by a scan when only the codes are.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from xmr.store import hamming_kernel
from xmr.store.binary_file import (
    CODE_HEADER,
    CODE_MAGIC,
    VEC_HEADER,
    VEC_MAGIC,
    BinaryFile,
    CodedVectors,
    code_layout,
    rotation_digest,
    vec_layout,
)
from xmr.store.codes import encode, highest, nearest, pack, project, scores, words_for
from xmr.store.hnsw import HnswStore
from xmr.store.hnsw_file import index_file_name
from xmr.store.hnsw_view import LoadedView
from xmr.store.rotation import RotationRecord
from xmr.store.source import VectorSource
from xmr.store.topk import empty, exact_block, in_sorted, keep_candidates, merge, sorted_intersection, topk

BACKEND = "binary"
# k * OVERSAMPLE codes are rescored exactly (benchmarks/codes.py; docs/codes.md)
DEFAULT_OVERSAMPLE = 40
DEFAULT_ROTATION = "random"  # better recall than ITQ at every size and code length measured (docs/codes.md)
ROTATION_SAMPLE = 20_000  # vectors the rotation is learned from
# ranking a large file: its first PREFILTER_WORDS words keep max(PREFILTER_KEEP * rescored,
# n / PREFILTER_SHARE) rows, whose whole codes are then scored (benchmarks/codes.py measures the recall)
PREFILTER_WORDS = 2
PREFILTER_KEEP = 16
PREFILTER_SHARE = 256
# a member set this small is scanned exactly (no Hamming pass over every code)
SUBSET_EXACT_MAX = 20_000
# vectors added since the files were written that a checkpoint leaves in the tail (searched
# exactly beside the codes, read from the catalogue when a search opens: ~2 KB each) instead of
# rewriting both files, which takes minutes at millions of vectors
TAIL_DEFER_MAX = 10_000
_BLOCK_ROWS = 1 << 16
_BUILD_BATCH = 20_000


def env_oversample() -> int | None:
    """XMR_CODES_OVERSAMPLE when it is a positive integer."""
    raw = os.environ.get("XMR_CODES_OVERSAMPLE", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


class CodedSearch:
    """Top-k over a ``CodedVectors`` file: Hamming ranking then exact rescoring, or an exact scan."""

    def __init__(self, index: CodedVectors, oversample: int, scan_below: int = SUBSET_EXACT_MAX) -> None:
        self.index = index
        self.oversample = max(1, int(oversample))
        self.scan_below = int(scan_below)
        self.last: dict[str, Any] = {}

    def search(self, q: np.ndarray, k: int, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of each row of ``q`` among ``members`` (sorted ids in the file)."""
        ix = self.index
        m = len(q)
        if len(members) == 0 or k <= 0:
            return empty(m)
        # members are file ids: as many as the file holds means all of them, in order
        every = len(members) == ix.count
        want = min(len(members), k * self.oversample)
        if ix.codes is None or len(members) <= self.scan_below:
            if len(members) > ix.count // 4:  # a scan of most of the file: read ahead
                ix.sequential()
            self.last = {"path": "exact", "scored": int(len(members))}
            return self._exact(q, k, np.arange(ix.count) if every else ix.positions(members))
        allowed = None
        if not every:
            allowed = np.zeros(ix.count, bool)
            allowed[ix.positions(members)] = True
        proj = project(q, ix.centre, ix.rotation)  # type: ignore[arg-type]
        qcodes = pack(proj)
        out_ids, out_sims = [], []
        for row in range(m):
            rows = self._ranked(qcodes[row], proj[row], allowed, want)  # ascending: the reads go forwards
            vecs = ix.read_rows(rows)
            ids, sims = topk(q[row : row + 1] @ vecs.T, np.asarray(ix.ids[rows], np.int64), k)
            out_ids.append(ids)
            out_sims.append(sims)
        self.last = {"path": "codes", "scored": int(want)}
        return np.concatenate(out_ids), np.concatenate(out_sims)

    def _ranked(self, qcode: np.ndarray, proj: np.ndarray, allowed: np.ndarray | None, want: int) -> np.ndarray:
        """Rows (ascending) of the ``want`` allowed codes that score highest against the query.

        A large file is ranked in two passes: the Hamming distance of its first
        ``PREFILTER_WORDS`` words to the query's code (with a random rotation, a random
        shorter code) keeps the nearest rows, whose whole codes are then scored against the
        query's projections (``codes.scores``); a quarter of the memory traffic of one full pass."""
        codes = self.index.codes
        assert codes is not None
        words, n = codes.shape
        keep = max(PREFILTER_KEEP * want, n // PREFILTER_SHARE)
        if words >= 2 * PREFILTER_WORDS and keep < n // 4:
            rows = nearest(qcode[:PREFILTER_WORDS], codes[:PREFILTER_WORDS], keep, allowed=allowed)
        else:
            rows = np.arange(n) if allowed is None else np.flatnonzero(allowed)
        return rows[highest(scores(proj, codes, rows), want)]

    def _exact(self, q: np.ndarray, k: int, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact scan of the rows ``pos`` (sorted), in blocks."""
        ix = self.index
        m = len(q)
        best = empty(m)
        for s in range(0, len(pos), _BLOCK_ROWS):
            rows = pos[s : s + _BLOCK_ROWS]
            contiguous = rows[-1] - rows[0] + 1 == len(rows)
            vecs = ix.vecs[rows[0] : rows[-1] + 1] if contiguous else ix.vecs[rows]
            best = merge([best, exact_block(q, np.asarray(vecs), np.asarray(ix.ids[rows], np.int64), k)], m, k)
        return best


class CodesView(LoadedView):
    """``LoadedView`` whose ann-mode index is a ``CodedVectors`` file searched by ``CodedSearch``."""

    oversample = DEFAULT_OVERSAMPLE
    scan_below = SUBSET_EXACT_MAX
    searcher: CodedSearch | None = None

    def install(self, source: VectorSource, index: Any, state: dict) -> None:
        """``LoadedView.install`` without its sorts: the file's ids are sorted, and when nothing
        was deleted since (the common case) the counts say so, or the live ids begin with them."""
        count = source.vector_count(self.space, self.model_id)
        mx = source.max_vector_id(self.space, self.model_id)
        labels = np.asarray(index.ids, np.int64)
        state_max = int(state["max_vector_id"])
        self.tail_ids, self.tail_vecs = self._fetch(source, state_max)
        if count == len(labels) + len(self.tail_ids):
            # ids are never reused and the file held every live id <= state_max when written:
            # as many live ids as file ids plus tail means none of the file's was deleted (and
            # the live ids, 40 MB at 5M, need not be read)
            self.index_live = labels
        else:
            live = source.live_vector_ids(self.space, self.model_id)
            if len(live) >= len(labels) and np.array_equal(live[: len(labels)], labels):
                self.index_live = labels
            else:
                self.index_live = labels[in_sorted(live, labels)] if len(live) else labels[:0]
        self.mode = "ann"
        self.index, self.state = index, state
        self.index_ids = labels
        self.loaded_max = max(mx, state_max, int(self.tail_ids[-1]) if len(self.tail_ids) else 0)
        self.seen = (count, mx)
        self.searcher = CodedSearch(index, self.oversample, self.scan_below)

    def search(
        self, q: np.ndarray, k: int, cand: np.ndarray | None, ef_search: int, threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.mode != "ann" or self.searcher is None:
            return super().search(q, k, cand, ef_search, threads)
        live = self.index_live
        if cand is not None:
            live = sorted_intersection(cand, live)
        parts = [self.searcher.search(q, k, live)]
        if len(self.tail_ids):
            ids, vecs = keep_candidates(self.tail_ids, self.tail_vecs, cand)
            parts.append(exact_block(q, vecs, ids, k))
        return merge(parts, len(q), k)

    def reusable_index(self, state: dict | None) -> Any:
        return None

    def counts(self) -> dict[str, int]:
        out = super().counts()
        if self.mode == "ann" and self.searcher is not None:
            out["codes_bits"] = int(self.index.rotation.shape[1]) if self.index.codes is not None else 0
        return out


class BinaryStore(HnswStore):
    """``VectorIndex`` over 1-bit codes and a flat float32 file (see the module docstring).

    Options beyond the protocol's: ``oversample`` (codes rescored per result), ``bits``
    (code length, at most ``dim``; default ``dim``), ``rotation`` ("itq" or "random"),
    ``scan_below`` (a member set this small is scanned exactly, no codes),
    ``exact_threshold`` (below it, exact over vectors held in memory, no files).
    """

    backend = BACKEND

    def __init__(
        self,
        directory: Path,
        source: VectorSource,
        space: str,
        model_id: str,
        dim: int,
        *,
        oversample: int | None = None,
        bits: int | None = None,
        rotation: str | None = None,
        scan_below: int = SUBSET_EXACT_MAX,
        readonly: bool = False,
        mapped: bool = False,
        **options: Any,
    ) -> None:
        self.oversample = int(oversample or env_oversample() or DEFAULT_OVERSAMPLE)
        self.bits = int(bits or dim)
        self.rotation = rotation or DEFAULT_ROTATION
        self.scan_below = int(scan_below)
        options.pop("params", None)  # hnswlib's graph parameters: no graph here
        options.pop("num_threads", None)
        super().__init__(directory, source, space, model_id, dim, readonly=readonly, mapped=mapped, **options)
        self.file = BinaryFile(directory, source, space, model_id, dim)
        self.rotations = RotationRecord(space, model_id, self.file.codes_path, dim)  # type: ignore[attr-defined]
        self.mapped = readonly  # a reader always maps: there is nothing else to load

    @property
    def codes_path(self) -> Path:
        return self.file.codes_path  # type: ignore[attr-defined]

    def _reset(self) -> None:
        super()._reset()
        view = CodesView(self.space, self.model_id, self.dim)
        view.oversample, view.scan_below = self.oversample, self.scan_below
        self._view = view

    def _install(self, index: Any, state: dict) -> None:
        super()._install(index, state)
        if index.codes_problem:
            self.degraded = f"codes unusable ({index.codes_problem}): scanning the float32 vectors exactly"

    def _open_ann(self) -> None:
        self.degraded = None
        super()._open_ann()

    def problem(self) -> str:
        """``HnswStore.problem``, and a state row another backend wrote (--codes switched it)."""
        why = super().problem()
        state = self.file.state()
        if not why and state is not None and state.get("backend") != self.backend:
            if self.source.vector_count(self.space, self.model_id) >= self.exact_threshold:
                return f"the state row is the {state.get('backend') or 'hnswlib'} backend's"
        return why

    def persisted(self) -> bool:
        return self.path.exists() or self.codes_path.exists()

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out.pop("params", None)
        out["scan"] = False
        state = out.get("state") or {}
        out["codes"] = {
            "bits": state.get("bits", self.bits),
            "rotation": state.get("rotation", self.rotation),
            "oversample": self.oversample,
            "codes_path": str(self.codes_path),
            "codes_exist": self.codes_path.exists(),
            "usable": self._opened and self._view.mode == "ann" and not self.degraded,
        }
        searcher = getattr(self._view, "searcher", None)
        if searcher is not None and searcher.last:
            out["codes"]["last_search"] = dict(searcher.last)
        return out

    def _state_base(self, generation: int) -> dict:
        return {**super()._state_base(generation), "backend": self.backend}

    # ------------------------------------------------------------ checkpoint

    def _checkpoint_locked(self, locked: bool, force_rebuild: str | None = None) -> dict:
        """Rewrite both files from the source (streamed), reusing the recorded rotation."""
        if locked:
            self.file.remove_temp_files()
        count = self.source.vector_count(self.space, self.model_id)
        prev = self.file.state()
        generation = int(prev.get("generation", 0)) + 1 if prev else 1
        if count < self.exact_threshold:
            return self._checkpoint_exact(generation)
        if prev is not None and not force_rebuild and self._tail_can_wait(prev, count):
            # the files stay; the state row says up to where the catalogue was looked at
            state = {**prev, "checked_max_vector_id": self.source.max_vector_id(self.space, self.model_id)}
            self.source.put_ann_state(self.space, self.model_id, state)
            return state
        t0 = time.perf_counter()
        self._reset()
        mx0 = self.source.max_vector_id(self.space, self.model_id)
        file: BinaryFile = self.file  # type: ignore[assignment]
        vec_tmp = file.temp_path(file.path)
        code_tmp = file.temp_path(file.codes_path)
        try:
            ids, sample = self._write_vectors(vec_tmp, mx0)
            centre, rot, method, learned = self.rotations.choose(
                self.source, prev, sample, min(self.bits, self.dim), self.rotation
            )
            self._write_codes(vec_tmp, code_tmp, len(ids), centre, rot, method)
            digest = rotation_digest(centre, rot)
            state = {
                **self._state_base(generation),
                "file": file.path.name,
                "codes_file": file.codes_path.name,
                "element_count": int(len(ids)),
                "deleted_count": 0,
                "max_vector_id": int(max(mx0, int(ids[-1]) if len(ids) else 0)),
                "bits": int(rot.shape[1]),
                "rotation": method,
                "rotation_digest": digest,
                "rotation_learned_at": learned,
                "exact_threshold": self.exact_threshold,
                "build": "full",
                "build_seconds": round(time.perf_counter() - t0, 3),
                "written_at": time.time(),
            }
            state = file.commit(vec_tmp, code_tmp, state)
        except BaseException:
            for p in (vec_tmp, code_tmp):
                p.unlink(missing_ok=True)
            raise
        self.rotations.record(self.source, state)
        hamming_kernel.load()  # compiled now (once per machine), not by the first search
        self.last_rebuild_reason = force_rebuild
        if prev is None or prev.get("backend") != self.backend:  # switched from hnswlib: its file is stale
            (self.directory / index_file_name(self.space, self.model_id)).unlink(missing_ok=True)
        index, loaded, _ = self._load_valid(full=False)  # the files just written, mapped
        if index is not None and loaded is not None:
            self._install(index, loaded)
            self._opened = True
        return state

    def _tail_can_wait(self, prev: dict, count: int) -> bool:
        """Whether the files can stay as they are: since they were written, vectors were only
        added (none of theirs deleted), at most ``TAIL_DEFER_MAX``; the files open sound, their
        codes included; and they hold the rotation and code length asked for.

        A rewrite of both files took 147 s to add one photo to 5M vectors. Deletions are not
        deferred: a search would then read every live id (40 MB at 5M) to leave them out."""
        bits = min(self.bits, self.dim)
        if prev.get("backend") != self.backend or prev.get("rotation") != self.rotation:
            return False
        if int(prev.get("bits", -1)) != bits or self.file.temp_files():
            return False
        recorded = self.rotations.recorded(self.source)
        if recorded is None or recorded.get("digest") != prev.get("rotation_digest"):
            return False
        after = int(prev["max_vector_id"])
        batches = self.source.iter_vectors(self.space, self.model_id, after_id=after, batch=TAIL_DEFER_MAX + 1)
        with contextlib.closing(batches) as it:
            first = next(it, None)
        tail = 0 if first is None else len(first[0])
        if tail > TAIL_DEFER_MAX or count != int(prev["element_count"]) + tail:
            return False
        index, _, _ = self._load_valid(full=False)  # what a search opens: headers, ids, codes, spot checks
        if index is None:
            return False
        try:
            return not index.codes_problem
        finally:
            index.close()

    def _write_vectors(self, tmp: Path, until: int) -> tuple[np.ndarray, np.ndarray]:
        """Stream the live vectors (ids <= until) into ``tmp``; returns (ids, a strided sample)."""
        count = self.source.vector_count(self.space, self.model_id)
        stride = max(1, count // ROTATION_SAMPLE)
        id_parts, sample_parts = [], []
        seen = 0
        with open(tmp, "r+b") as f:
            f.write(b"\0" * VEC_HEADER.size)
            for ids, vecs in self.source.iter_vectors(self.space, self.model_id, after_id=0, batch=_BUILD_BATCH):
                self._check_batch(vecs)
                ids = np.asarray(ids, np.int64)
                vecs = np.asarray(vecs, np.float32)
                if len(ids) and ids[-1] > until:
                    keep = ids <= until
                    ids, vecs = ids[keep], vecs[keep]
                if not len(ids):
                    break
                f.write(np.ascontiguousarray(vecs, "<f4").tobytes())
                take = (np.arange(seen, seen + len(ids)) % stride) == 0
                sample_parts.append(vecs[take])
                id_parts.append(ids)
                seen += len(ids)
            all_ids = np.concatenate(id_parts) if id_parts else np.empty(0, np.int64)
            f.write(all_ids.astype("<i8").tobytes())
            f.seek(0)
            f.write(VEC_HEADER.pack(VEC_MAGIC, self.dim, 0, len(all_ids)))
        if os.path.getsize(tmp) != vec_layout(self.dim, len(all_ids))[1]:
            raise OSError(f"short write of {tmp}")
        sample = np.concatenate(sample_parts) if sample_parts else np.empty((0, self.dim), np.float32)
        return all_ids, sample

    def _write_codes(
        self, vec_tmp: Path, code_tmp: Path, count: int, centre: np.ndarray, rot: np.ndarray, method: str
    ) -> None:
        bits = rot.shape[1]
        at, size = code_layout(self.dim, bits, count)
        with open(code_tmp, "r+b") as f:
            f.write(CODE_HEADER.pack(CODE_MAGIC, self.dim, bits, count, method.encode("ascii")))
            f.write(np.ascontiguousarray(centre, "<f4").tobytes())
            f.write(np.ascontiguousarray(rot, "<f4").tobytes())
            f.truncate(size)
        if count == 0:
            return
        vecs = np.memmap(vec_tmp, "<f4", mode="r", offset=VEC_HEADER.size, shape=(count, self.dim))
        codes = np.memmap(code_tmp, "<u8", mode="r+", offset=at, shape=(words_for(bits), count))
        for s in range(0, count, _BLOCK_ROWS):
            e = min(count, s + _BLOCK_ROWS)
            codes[:, s:e] = encode(vecs[s:e], centre, rot).T
        codes.flush()
        del codes, vecs
