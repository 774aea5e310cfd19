"""The ``VectorIndex`` contract, run against every backend: the hnswlib one and a small
in-memory exact one defined here (registered by name, as a plugin would be).

A new backend passes by being added to ``BACKENDS`` below; the expected answers are
computed here by brute force over the vectors the test constructed, never by the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xmr import paths
from xmr.catalogue import Catalogue
from xmr.errors import UsageError, XmrError
from xmr.indexer import IndexOptions, index
from xmr.store import (
    BACKEND_SETTING,
    DEFAULT_BACKEND,
    BackendError,
    VectorIndex,
    index_backend,
    open_index,
    register_backend,
    unregister_backend,
)
from xmr.store.factory import require
from xmr.store.hnsw_build import HnswParams
from xmr.store.memory import MemoryVectorSource

SPACE, MODEL, DIM = "clip", "contract-model", 16
MEMORY = "memory-exact"


class ExactMemoryIndex:
    """The simplest honest ``VectorIndex``: brute force over the source's live vectors at every
    search, nothing on disk; its "checkpoint" is a state row saying how far it has seen."""

    backend = MEMORY

    def __init__(self, directory: Path, source: Any, space: str, model_id: str, dim: int, **options: Any) -> None:
        self.source, self.space, self.model_id, self.dim = source, space, model_id, dim
        self.label = f"memory:{space}/{model_id}"
        self._opened = False
        self._count = 0

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        parts = list(self.source.iter_vectors(self.space, self.model_id))
        if not parts:
            return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def search(self, queries: np.ndarray, k: int, *, candidate_ids: np.ndarray | None = None):
        if k < 0:
            raise UsageError(f"k must be >= 0, got {k}")
        q = np.atleast_2d(np.asarray(queries, np.float32))
        ids, vecs = self._live()
        if candidate_ids is not None:
            keep = np.isin(ids, candidate_ids)
            ids, vecs = ids[keep], vecs[keep]
        self._opened, self._count = True, len(ids)
        sims = q @ vecs.T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return ids[order], np.take_along_axis(sims, order, axis=1).astype(np.float32)

    exact_search = search

    def refresh(self) -> None:
        self._opened = False

    def checkpoint(self) -> dict:
        state = {"backend": MEMORY, "max_vector_id": self.source.max_vector_id(self.space, self.model_id)}
        self.source.put_ann_state(self.space, self.model_id, state)
        return state

    def problem(self) -> str:
        state = self.source.get_ann_state(self.space, self.model_id)
        if state is None:
            return "never checkpointed" if self.source.vector_count(self.space, self.model_id) else ""
        behind = state["max_vector_id"] != self.source.max_vector_id(self.space, self.model_id)
        return "behind the catalogue" if behind else ""

    def verify(self) -> str:
        return ""

    def discard_if_damaged(self) -> bool:
        return False

    def fallback(self) -> str:
        return ""

    def persisted(self) -> bool:
        return False

    def fingerprint(self) -> str:
        return json.dumps(self.source.get_ann_state(self.space, self.model_id), sort_keys=True)

    def stats(self) -> dict[str, Any]:
        out = {"backend": MEMORY, "space": self.space, "model_id": self.model_id, "dim": self.dim}
        out.update(opened=self._opened, mode="exact")
        if self._opened:
            out["live_count"] = self._count
        return out

    def close(self) -> None:
        self._opened = False


# backend name -> options for open_index; the hnswlib ones force an HNSW graph (threshold 0)
# that is exhaustive on these sizes (ef >= n), so its answers must equal brute force
BACKENDS = {
    "hnswlib": {
        "exact_threshold": 0,
        "params": HnswParams(M=16, ef_construction=100, ef_search=1000),
        "num_threads": 1,
    },
    MEMORY: {},
    # codes ranked on every search (no thresholds); an oversample covering these sizes makes
    # the rescoring see every vector, so its answers must equal brute force
    "binary": {"exact_threshold": 0, "scan_below": 0, "oversample": 1000},
    # milvus-lite in this process; HNSW searched with ef >= n, so exhaustive as well. The
    # address and this test's namespace are filled in by the milvus_lite fixture below.
    "milvus": {"index_type": "HNSW", "ef_search": 1000},
}


@pytest.fixture(scope="session")
def milvus_lite_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return "milvus-lite:" + str(tmp_path_factory.mktemp("milvus") / "contract.db")


@pytest.fixture(autouse=True)
def milvus_lite(milvus_lite_db: str, request: pytest.FixtureRequest) -> None:
    # one database file per session (opening one costs seconds), one namespace per test
    namespace = "t" + hashlib.blake2b(request.node.nodeid.encode(), digest_size=6).hexdigest()
    BACKENDS["milvus"].update(uri=milvus_lite_db, namespace=namespace)


@pytest.fixture(autouse=True)
def memory_backend() -> Iterator[None]:
    register_backend(MEMORY, ExactMemoryIndex)
    yield
    unregister_backend(MEMORY)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def open_(backend: str, tmp_path: Path, src: MemoryVectorSource, **extra: Any) -> VectorIndex:
    return open_index(backend, tmp_path / "ann", src, SPACE, MODEL, DIM, **BACKENDS[backend], **extra)


def brute_force(q: np.ndarray, ids: np.ndarray, vecs: np.ndarray, k: int) -> np.ndarray:
    sims = q @ vecs.T
    return ids[np.argsort(-sims, axis=1)[:, :k]]


def filled(backend: str, tmp_path: Path, n: int = 300, seed: int = 0):
    src = MemoryVectorSource()
    rng = np.random.default_rng(seed)
    data = unit(rng, n)
    ids = src.add(SPACE, MODEL, data)
    return src, open_(backend, tmp_path, src), ids, data, rng


def test_every_backend_implements_the_protocol(backend, tmp_path):
    _, index, _, _, _ = filled(backend, tmp_path, 10)
    assert isinstance(index, VectorIndex)
    assert index.stats()["backend"] == backend


def test_search_returns_top_k_best_first(backend, tmp_path):
    _, index, ids, data, rng = filled(backend, tmp_path)
    q = unit(rng, 5)
    found, sims = index.search(q, 10)
    assert found.shape == sims.shape == (5, 10)
    assert found.dtype == np.int64 and sims.dtype == np.float32
    assert (np.diff(sims, axis=1) <= 1e-6).all()
    np.testing.assert_array_equal(found, brute_force(q, ids, data, 10))
    np.testing.assert_allclose(sims, np.sort(q @ data.T, axis=1)[:, ::-1][:, :10], atol=1e-5)
    # k beyond the live count is not an error, k = 0 answers nothing
    assert index.search(q, 10_000)[0].shape == (5, 300)
    assert index.search(q, 0)[0].shape == (5, 0)
    with pytest.raises(UsageError):
        index.search(q, -1)


def test_exact_search_equals_brute_force(backend, tmp_path):
    _, index, ids, data, rng = filled(backend, tmp_path)
    q = unit(rng, 7)
    found, _ = index.exact_search(q, 20)
    np.testing.assert_array_equal(found, brute_force(q, ids, data, 20))


def test_candidate_ids_restrict_the_search(backend, tmp_path):
    _, index, ids, data, rng = filled(backend, tmp_path)
    members = np.sort(rng.choice(ids, 40, replace=False))
    q = unit(rng, 4)
    pick = np.isin(ids, members)
    for search in (index.search, index.exact_search):
        found, _ = search(q, 10, candidate_ids=members)
        assert np.isin(found, members).all()
        np.testing.assert_array_equal(found, brute_force(q, ids[pick], data[pick], 10))


def test_deletions_and_additions_after_a_checkpoint_are_synced(backend, tmp_path):
    src, index, ids, data, rng = filled(backend, tmp_path)
    index.checkpoint()
    q = unit(rng, 3)
    index.search(q, 5)  # opened from the checkpoint
    gone = ids[:100]
    src.delete(SPACE, MODEL, gone)
    new = unit(rng, 20)
    new_ids = src.add(SPACE, MODEL, new)
    all_ids, all_vecs = np.concatenate([ids[100:], new_ids]), np.concatenate([data[100:], new])
    for _ in range(2):  # synced on the next search, and again after a refresh
        found, _ = index.search(q, 15)
        assert not np.isin(found, gone).any()
        np.testing.assert_array_equal(found, brute_force(q, all_ids, all_vecs, 15))
        index.refresh()
    # the query itself is a stored vector: it comes first
    found, sims = index.search(new[:1], 1)
    assert found[0, 0] == new_ids[0] and sims[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_reopened_index_answers_the_same(backend, tmp_path):
    src, index, _, _, rng = filled(backend, tmp_path)
    index.checkpoint()
    q = unit(rng, 6)
    before = index.search(q, 10)
    index.close()
    again = open_(backend, tmp_path, src, readonly=True)
    after = again.search(q, 10)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_allclose(before[1], after[1], atol=1e-6)
    assert again.fallback() == ""


def test_problem_until_checkpointed_then_sound(backend, tmp_path):
    src, index, _, _, rng = filled(backend, tmp_path)
    assert index.problem() != ""  # vectors, never checkpointed
    index.checkpoint()
    assert index.problem() == ""
    assert index.verify() == ""
    assert index.discard_if_damaged() is False  # nothing damaged to remove
    src.add(SPACE, MODEL, unit(rng, 3))
    assert index.problem() != ""  # the catalogue moved on
    index.checkpoint()
    assert index.problem() == ""


def test_fingerprint_changes_with_the_contents(backend, tmp_path):
    src, index, _, _, rng = filled(backend, tmp_path)
    index.checkpoint()
    first = index.fingerprint()
    assert index.fingerprint() == first  # stable while nothing changes
    assert open_(backend, tmp_path, src).fingerprint() == first  # and the same for another reader
    src.add(SPACE, MODEL, unit(rng, 5))
    index.checkpoint()
    assert index.fingerprint() != first


def test_stats_keys(backend, tmp_path):
    src, index, ids, _, rng = filled(backend, tmp_path)
    before = index.stats()
    assert {"backend", "space", "model_id", "dim", "opened", "mode"} <= set(before)
    assert before["opened"] is False and (before["space"], before["model_id"], before["dim"]) == (SPACE, MODEL, DIM)
    src.delete(SPACE, MODEL, ids[:10])
    index.search(unit(rng, 1), 3)
    after = index.stats()
    assert after["opened"] is True and after["live_count"] == len(ids) - 10


def test_close_releases_and_a_later_search_reopens(backend, tmp_path):
    _, index, ids, data, rng = filled(backend, tmp_path)
    q = unit(rng, 2)
    index.search(q, 3)
    index.close()
    assert index.stats()["opened"] is False
    np.testing.assert_array_equal(index.search(q, 3)[0], brute_force(q, ids, data, 3))


# -- only for backends that keep files: damage is seen, answered around, removed ----------


def test_damaged_hnswlib_file_is_a_problem_and_is_answered_exactly(tmp_path):
    src, index, ids, data, rng = filled("hnswlib", tmp_path)
    index.checkpoint()
    assert index.persisted()
    path = tmp_path / "ann" / index.label
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    assert index.problem() != ""
    assert index.verify() != ""
    q = unit(rng, 3)
    reader = open_("hnswlib", tmp_path, src, readonly=True, mapped=True)
    np.testing.assert_array_equal(reader.search(q, 5)[0], brute_force(q, ids, data, 5))
    assert reader.fallback() != ""  # it says why it answered exactly
    assert index.discard_if_damaged() is True and not index.persisted()


# -- the factory -------------------------------------------------------------------------


def test_unknown_backend_is_a_clear_xmr_error(tmp_path):
    with pytest.raises(BackendError, match="unknown vector index backend 'faiss'.*hnswlib") as err:
        open_index("faiss", tmp_path, MemoryVectorSource(), SPACE, MODEL, DIM)
    assert isinstance(err.value, XmrError)


def test_a_backend_without_its_package_says_what_to_install(tmp_path):
    def needs_missing(*args: Any, **kw: Any) -> VectorIndex:
        require("xmr_no_such_package", backend="ghost", install="'xmr[ghost]'")
        raise AssertionError("require let a missing package through")

    register_backend("ghost", needs_missing)
    try:
        with pytest.raises(BackendError, match=r"'ghost' vector index needs .*pip install 'xmr\[ghost\]'"):
            open_index("ghost", tmp_path, MemoryVectorSource(), SPACE, MODEL, DIM)
    finally:
        unregister_backend("ghost")


def test_the_catalogue_setting_picks_the_backend(tmp_path):
    src = MemoryVectorSource()
    assert index_backend(src) == DEFAULT_BACKEND == "hnswlib"  # no setting: an index from before it
    src.set_setting(BACKEND_SETTING, MEMORY)
    index = open_index(index_backend(src), tmp_path, src, SPACE, MODEL, DIM)
    assert isinstance(index, ExactMemoryIndex)


def test_a_catalogue_without_the_setting_opens_with_hnswlib(tmp_path):
    with Catalogue.open(tmp_path / "index", create=True) as cat:
        assert cat.get_setting(BACKEND_SETTING) is None
        assert index_backend(cat) == "hnswlib"
        index = open_index(index_backend(cat), tmp_path / "ann", cat, SPACE, MODEL, DIM, readonly=True)
        assert index.stats()["backend"] == "hnswlib"


@pytest.mark.usefixtures("fake_encoders")
def test_an_index_run_records_the_backend_and_checkpoints_with_the_recorded_one(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    (root / "a.txt").write_text("a lighthouse on the coast\n", encoding="utf-8")
    index([root], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    with Catalogue.open(paths.index_dir()) as cat:
        assert cat.get_setting(BACKEND_SETTING) == "hnswlib"
        assert cat.get_ann_state("clip", cat.active_model("clip"))["build"] == "exact"  # the hnswlib row
        with cat.transaction():
            cat.set_setting(BACKEND_SETTING, MEMORY)
    (root / "b.txt").write_text("a dog running on the beach\n", encoding="utf-8")
    index([root], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        model = cat.active_model("clip")
        want = {"backend": MEMORY, "max_vector_id": cat.max_vector_id("clip", model)}
        assert cat.get_ann_state("clip", model) == want
