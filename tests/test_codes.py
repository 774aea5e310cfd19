"""1-bit codes (xmr.store.codes) and the ``binary`` backend that ranks by them (xmr.store.binary).

Expected answers are computed here by brute force, and code bits and Hamming distances by
counting signs and bits one at a time, never by the functions under test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke
from test_indexer import make_text

from xmr import paths
from xmr.catalogue import Catalogue
from xmr.errors import UsageError
from xmr.store import BACKEND_SETTING, hamming_kernel, open_index
from xmr.store import codes as codes_module
from xmr.store.binary import PREFILTER_KEEP, PREFILTER_SHARE, PREFILTER_WORDS, CodedSearch
from xmr.store.binary_file import code_layout
from xmr.store.codes import encode, hamming, highest, learn_rotation, nearest, pack, popcount, scores, smallest
from xmr.store.memory import MemoryVectorSource
from xmr.store.policy import AUTO_CODES_MIN, CODES_SETTING, check_codes, choose_backend
from xmr.store.rotation import rotation_key

SPACE, MODEL, DIM = "clip", "codes-model", 32


def clustered(rng: np.random.Generator, n: int, dim: int = DIM, clusters: int = 12) -> np.ndarray:
    """Unit vectors around a few centres sharing a common offset, as embeddings are."""
    centres = rng.standard_normal((clusters, dim)) * 2.0 + 3.0 * rng.standard_normal(dim)
    x = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def near(rng: np.random.Generator, data: np.ndarray, m: int) -> np.ndarray:
    """Queries close to stored vectors, as a query is close to what it finds."""
    x = data[rng.choice(len(data), m, replace=False)] + 0.05 * rng.standard_normal((m, data.shape[1]))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(q: np.ndarray, ids: np.ndarray, vecs: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(q @ vecs.T), axis=1, kind="stable")[:, :k]]


def open_(tmp_path: Path, src: MemoryVectorSource, **options) -> object:
    opts = {"exact_threshold": 0, "scan_below": 0, **options}
    return open_index("binary", tmp_path / "ann", src, SPACE, MODEL, DIM, **opts)


def filled(tmp_path: Path, n: int = 2000, seed: int = 0, **options):
    rng = np.random.default_rng(seed)
    src = MemoryVectorSource()
    data = clustered(rng, n)
    ids = src.add(SPACE, MODEL, data)
    return src, open_(tmp_path, src, **options), ids, data, rng


def naive_bits(x: np.ndarray, centre: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Each vector's code as a 0/1 row, one projection's sign at a time."""
    out = np.zeros((len(x), rotation.shape[1]), np.uint8)
    for i in range(len(x)):
        for j in range(rotation.shape[1]):
            out[i, j] = 1 if float(np.dot(x[i] - centre, rotation[:, j])) >= 0 else 0
    return out


# -- the code arithmetic ----------------------------------------------------------------------


@pytest.mark.parametrize("words", [1, 3, 4, 8, 9])
def test_hamming_equals_a_naive_bit_count(words):
    rng = np.random.default_rng(words)
    n = 70_000  # more than one row chunk
    codes = rng.integers(0, 2**63, size=(words, n), dtype=np.uint64) * np.uint64(2)
    codes |= rng.integers(0, 2, size=(words, n), dtype=np.uint64)
    codes[:, 7] = np.uint64(0xFFFFFFFFFFFFFFFF)  # every bit set
    q = codes[:, 3].copy()
    got = hamming(q, codes, threads=2)
    for col in [0, 3, 7, 100, 65_537, n - 1]:
        want = sum(bin(int(codes[w, col]) ^ int(q[w])).count("1") for w in range(words))
        assert got[col] == want, col
    assert got[3] == 0
    assert np.array_equal(hamming(q, codes, threads=1), got)


def test_popcount_counts_the_bits_of_each_word():
    x = np.array([0, 1, 0xFF, 0x8000000000000001, 0xFFFFFFFFFFFFFFFF, 0x0123456789ABCDEF], np.uint64)
    assert popcount(x).tolist() == [bin(int(v)).count("1") for v in x]


def test_encode_sets_one_bit_per_nonnegative_projection():
    rng = np.random.default_rng(1)
    x = clustered(rng, 50)
    for bits in (DIM, 20):  # a full word's worth and a partial word
        centre, rot = learn_rotation(x, bits, "random")
        codes = encode(x, centre, rot)
        want = naive_bits(x, centre, rot)
        assert codes.shape == (50, 1) and codes.dtype == np.uint64
        for i in range(50):
            assert [(int(codes[i, 0]) >> j) & 1 for j in range(bits)] == want[i].tolist()
            assert int(codes[i, 0]) >> bits == 0  # padding bits stay clear


@pytest.mark.parametrize("method", ["itq", "random"])
def test_rotations_are_orthonormal_and_itq_quantises_better(method):
    rng = np.random.default_rng(2)
    x = clustered(rng, 3000)
    centre, rot = learn_rotation(x, DIM, method)
    np.testing.assert_allclose(rot.T @ rot, np.eye(DIM), atol=1e-4)
    np.testing.assert_allclose(centre, x.mean(axis=0), atol=1e-5)
    if method == "itq":  # ITQ minimises ||B - V R||: lower than a random rotation's loss
        v = x - centre
        loss = {}
        for name in ("itq", "random"):
            _, r = learn_rotation(x, DIM, name)
            p = v @ r
            loss[name] = float(np.square(np.sign(p) - p).sum())
        assert loss["itq"] < loss["random"]


def test_smallest_picks_the_smallest_distances():
    rng = np.random.default_rng(3)
    dist = rng.integers(0, 40, 5000).astype(np.uint16)
    for count in (1, 17, 500, 4999, 5000, 6000):
        got = smallest(dist, count)
        assert len(got) == min(count, 5000) and len(np.unique(got)) == len(got)
        assert np.array_equal(np.sort(dist[got]), np.sort(dist)[: len(got)])


@pytest.fixture(params=["compiled", "numpy"])
def kernel(request, monkeypatch):
    """Each test runs with the compiled Hamming kernel and with numpy's fallback."""
    monkeypatch.setenv("XMR_CODES_KERNEL", "numpy" if request.param == "numpy" else "")
    hamming_kernel.reset()
    lib = hamming_kernel.load()
    if request.param == "compiled" and lib is None:
        pytest.skip("no C compiler here: the compiled kernel cannot be built")
    assert (lib is None) == (request.param == "numpy")
    yield request.param
    hamming_kernel.reset()


def naive_distances(q: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Hamming distance of q to each column, one bit at a time."""
    words, n = codes.shape
    return np.array([sum(bin(int(codes[w, i]) ^ int(q[w])).count("1") for w in range(words)) for i in range(n)])


def naive_nearest(dist: np.ndarray, count: int, admitted: np.ndarray) -> np.ndarray:
    """The count admitted columns of smallest distance, ties by column, ascending."""
    cols = np.flatnonzero(admitted)
    order = cols[np.lexsort((cols, dist[cols]))]
    return np.sort(order[:count])


def random_codes(rng: np.random.Generator, words: int, n: int) -> np.ndarray:
    codes = rng.integers(0, 2**63, size=(words, n), dtype=np.uint64) * np.uint64(2)
    codes |= rng.integers(0, 2, size=(words, n), dtype=np.uint64)
    codes[:, 5] = np.uint64(0xFFFFFFFFFFFFFFFF)
    return codes


@pytest.mark.parametrize("words", [1, 2, 3, 8])
def test_nearest_picks_the_smallest_naive_distances(kernel, words):
    rng = np.random.default_rng(10 + words)
    n = 3000
    codes = random_codes(rng, words, n)
    codes[:, 100:140] = codes[:, 7:8]  # many equal distances: ties are broken by column
    q = codes[:, 11].copy()
    dist = naive_distances(q, codes)
    every = np.ones(n, bool)
    allowed = rng.random(n) < 0.7
    for count in (1, 40, 777, n, n + 5):
        np.testing.assert_array_equal(nearest(q, codes, count), naive_nearest(dist, count, every))
        np.testing.assert_array_equal(
            nearest(q, codes, count, allowed=allowed, threads=2), naive_nearest(dist, count, allowed)
        )
    # the first words of a word-major array (a view with the full row stride), as the prefilter reads them
    np.testing.assert_array_equal(
        nearest(q[:1], codes[:1], 50), naive_nearest(naive_distances(q[:1], codes[:1]), 50, every)
    )


def test_the_compiled_kernel_counts_bits_over_many_threads_and_rows(kernel):
    rng = np.random.default_rng(4)
    n = 1 << 20  # several threads' share
    codes = random_codes(rng, 2, n)
    q = codes[:, 3].copy()
    want = hamming(q, codes, threads=1)  # the numpy bit count (checked against a naive count above)
    picked = nearest(q, codes, 5000, threads=4)
    assert len(picked) == 5000 and (np.diff(picked) > 0).all()
    cut = np.sort(want)[4999]
    assert want[picked].max() == cut and (want < cut).sum() <= 5000 <= (want <= cut).sum()


def naive_scores(proj: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Each column's sum of the projections, + where its bit is set and - where clear, one bit at a time."""
    words, n = codes.shape
    out = np.zeros(n)
    for i in range(n):
        for j in range(len(proj)):
            out[i] += proj[j] if (int(codes[j // 64, i]) >> (j % 64)) & 1 else -proj[j]
    return out


def test_scores_are_the_signed_sums_of_the_projections(kernel):
    """A code's score is the query's projections summed with the signs its bits store, as
    integers: proportional to the naive float sum within the rounding of each projection."""
    rng = np.random.default_rng(13)
    for bits in (512, 100):  # whole words, and a last word with padding
        words = -(-bits // 64)
        codes = random_codes(rng, words, 300)
        proj = rng.standard_normal(bits).astype(np.float32)
        rows = np.sort(rng.choice(300, 120, replace=False))
        got = scores(proj, codes, rows)
        assert got.dtype == np.int32 and got.shape == (120,)
        unit = float(np.abs(proj.astype(np.float64)).sum()) / 2**30  # one integer step, in projection units
        np.testing.assert_allclose(got * unit, naive_scores(proj, codes[:, rows]), rtol=0, atol=bits * unit)
        # the query's own signs score highest (every term positive), their complement lowest
        own = pack(proj[None, :])[0]
        every_bit = pack(np.ones((1, bits), np.float32))[0]
        top, bottom = scores(proj, np.stack([own, own ^ every_bit], axis=1), np.arange(2))
        assert bottom == -top and top >= int(np.abs(got).max())
        assert abs(top * unit - float(np.abs(proj.astype(np.float64)).sum())) <= bits * unit


def test_highest_picks_the_largest_values_ties_by_position():
    values = np.array([5, 1, 9, 5, 5, 9, 0, 5], np.int32)
    assert highest(values, 3).tolist() == [0, 2, 5]
    assert highest(values, 4).tolist() == [0, 2, 3, 5]
    assert highest(values, 8).tolist() == list(range(8)) == highest(values, 20).tolist()
    assert highest(values, 0).tolist() == []


def test_the_ranking_is_prefilter_then_scores(kernel):
    """Two passes: the Hamming distance of the first PREFILTER_WORDS words keeps the nearest
    max(16 x wanted, n / PREFILTER_SHARE) rows, then the query's scores of their whole codes
    rank those (each step checked with naive bit counts and sums)."""
    rng = np.random.default_rng(12)
    words, n, want = 8, 20_000, 30
    codes = random_codes(rng, words, n)
    proj = rng.standard_normal(64 * words).astype(np.float32)
    q = pack(proj[None, :])[0]
    searcher = CodedSearch(type("Mapped", (), {"codes": codes})(), oversample=1)
    keep = max(PREFILTER_KEEP * want, n // PREFILTER_SHARE)
    assert keep < n // 4  # the two-pass path
    every = np.ones(n, bool)
    first = naive_nearest(naive_distances(q[:PREFILTER_WORDS], codes[:PREFILTER_WORDS]), keep, every)
    by_score = first[np.argsort(-naive_scores(proj, codes[:, first]), kind="stable")]
    np.testing.assert_array_equal(searcher._ranked(q, proj, None, want), np.sort(by_score[:want]))
    # a small file: every allowed code is scored, no prefilter
    small = codes[:, :500]
    allowed = rng.random(500) < 0.5
    cols = np.flatnonzero(allowed)
    expected = np.sort(cols[np.argsort(-naive_scores(proj, small[:, cols]), kind="stable")[:want]])
    small_search = CodedSearch(type("Mapped", (), {"codes": small})(), oversample=1)
    np.testing.assert_array_equal(small_search._ranked(q, proj, allowed, want), expected)


def test_a_failed_kernel_build_falls_back_to_numpy_and_is_not_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("XMR_KERNELS_DIR", str(tmp_path / "kernels"))
    monkeypatch.setenv("XMR_CODES_KERNEL", "")
    monkeypatch.setenv("CC", "false")  # a compiler that always fails
    hamming_kernel.reset()
    try:
        assert hamming_kernel.load() is None
        assert [p.suffix for p in (tmp_path / "kernels").iterdir()] == [".failed"]
        codes = random_codes(np.random.default_rng(5), 2, 500)
        dist = naive_distances(codes[:, 0], codes)
        np.testing.assert_array_equal(nearest(codes[:, 0], codes, 20), naive_nearest(dist, 20, np.ones(500, bool)))
        monkeypatch.delenv("CC")
        hamming_kernel.reset()
        assert hamming_kernel.load() is None  # the marker stops every later process from retrying
    finally:
        hamming_kernel.reset()


def test_rescored_rows_are_read_as_stored(kernel, tmp_path):
    src, index, ids, data, rng = filled(tmp_path)
    index.checkpoint()
    index.search(data[:1], 1)  # opens the mapped files
    mapped = index._view.index
    rows = np.sort(rng.choice(len(ids), 300, replace=False))
    np.testing.assert_array_equal(mapped.read_rows(rows), data[rows])
    assert mapped.read_rows(np.empty(0, np.int64)).shape == (0, DIM)


def test_rescored_rows_read_by_several_threads_are_read_as_stored(kernel, tmp_path, monkeypatch):
    from xmr.store import binary_file

    monkeypatch.setattr(binary_file, "READ_ROWS_PER_WORKER", 16)  # 301 rows: as many shares as threads allow
    src, index, ids, data, rng = filled(tmp_path)
    index.checkpoint()
    index.search(data[:1], 1)
    mapped = index._view.index
    rows = np.sort(rng.choice(len(ids), 301, replace=False))
    np.testing.assert_array_equal(mapped.read_rows(rows), data[rows])
    np.testing.assert_array_equal(mapped.read_rows(rows[:3]), data[rows[:3]])
    if hasattr(os, "posix_fadvise"):  # rows out of the page cache: not copied at once, read after a hint
        fd = os.open(index.file.path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        np.testing.assert_array_equal(mapped.read_rows(rows), data[rows])


# -- the two-stage search -----------------------------------------------------------------------


def score_ranks(index, q: np.ndarray, ids: np.ndarray, data: np.ndarray, k: int) -> int:
    """How many codes, ranked by their score against the query, cover every query's true top-k
    (ties, and scores within the integer rounding, counted against)."""
    state = index.stats()["state"]
    assert state["bits"] == DIM
    mapped = index._view.index  # the store's mapped files: their centre and rotation
    centre, rot = np.array(mapped.centre), np.array(mapped.rotation)
    signs = naive_bits(data, centre, rot).astype(np.float64) * 2 - 1
    need = 0
    for row in range(len(q)):
        proj = (q[row].astype(np.float64) - centre) @ rot
        score = signs @ proj
        true = np.isin(ids, brute_force(q[row : row + 1], ids, data, k)[0])
        slack = DIM * np.abs(proj).sum() / 2**30  # the scores are rounded to integers of this step
        need = max(need, int((score >= score[true].min() - 2 * slack).sum()))
    return need


@pytest.mark.parametrize("rotation", ["itq", "random"])
def test_two_stage_search_is_exact_when_the_oversample_covers_the_true_neighbours(tmp_path, rotation):
    src, index, ids, data, rng = filled(tmp_path, rotation=rotation)
    index.checkpoint()
    q = near(rng, data, 6)
    k = 5
    index.search(q, k)  # opens the mapped files
    need = score_ranks(index, q, ids, data, k)
    assert need < len(ids) // 2  # the codes do rank: far fewer than all are needed
    reader = open_(tmp_path, src, readonly=True, mapped=True, oversample=-(-need // k), rotation=rotation)
    found, sims = reader.search(q, k)
    np.testing.assert_array_equal(found, brute_force(q, ids, data, k))
    np.testing.assert_allclose(sims, np.sort(q @ data.T, axis=1)[:, ::-1][:, :k], atol=1e-5)
    assert reader.stats()["codes"]["last_search"] == {"path": "codes", "scored": -(-need // k) * k}
    assert reader.fallback() == ""


def test_a_small_oversample_rescores_only_that_many(tmp_path):
    src, index, ids, data, rng = filled(tmp_path)
    index.checkpoint()
    reader = open_(tmp_path, src, readonly=True, oversample=3)
    q = clustered(rng, 4)
    found, sims = reader.search(q, 10)
    assert found.shape == (4, 10)
    assert reader.stats()["codes"]["last_search"] == {"path": "codes", "scored": 30}
    # what it returns is exact for those ids, best first
    for row in range(4):
        want = data[np.searchsorted(ids, found[row])] @ q[row]
        np.testing.assert_allclose(sims[row], want, atol=1e-5)
        assert (np.diff(sims[row]) <= 1e-6).all()


def test_candidate_subsets_and_the_scan_below_threshold(tmp_path):
    src, _, ids, data, rng = filled(tmp_path)
    writer = open_(tmp_path, src, scan_below=500)
    writer.checkpoint()
    q = clustered(rng, 3)
    small = np.sort(rng.choice(ids, 300, replace=False))
    found, _ = writer.search(q, 10, candidate_ids=small)
    np.testing.assert_array_equal(found, brute_force(q, small, data[np.searchsorted(ids, small)], 10))
    assert writer.stats()["codes"]["last_search"]["path"] == "exact"
    large = np.sort(rng.choice(ids, 1500, replace=False))
    found, _ = open_(tmp_path, src, readonly=True, oversample=1000).search(q, 10, candidate_ids=large)
    np.testing.assert_array_equal(found, brute_force(q, large, data[np.searchsorted(ids, large)], 10))


# -- additions, deletions, the rotation kept ------------------------------------------------------


def test_codes_follow_additions_and_deletions(tmp_path):
    src, index, ids, data, rng = filled(tmp_path, oversample=1000)
    first = index.checkpoint()
    q = clustered(rng, 4)
    gone = ids[::3]
    src.delete(SPACE, MODEL, gone)
    new = clustered(rng, 200)
    new_ids = src.add(SPACE, MODEL, new)
    live_ids = np.concatenate([np.setdiff1d(ids, gone), new_ids])
    live = np.concatenate([data[np.isin(ids, live_ids)], new])
    found, _ = index.search(q, 20)  # the tail exactly, the deleted skipped
    assert not np.isin(found, gone).any()
    np.testing.assert_array_equal(found, brute_force(q, live_ids, live, 20))
    assert index.stats()["tail_count"] == 200
    second = index.checkpoint()  # the codes now cover the new vectors, the deleted are gone
    assert second["element_count"] == len(live_ids) and second["max_vector_id"] == int(new_ids[-1])
    assert second["rotation_digest"] == first["rotation_digest"]  # learned once, kept
    reader = open_(tmp_path, src, readonly=True, oversample=1000)
    np.testing.assert_array_equal(reader.search(q, 20)[0], brute_force(q, live_ids, live, 20))
    assert reader.stats()["tail_count"] == 0 and reader.stats()["codes"]["last_search"]["path"] == "codes"
    recorded = json.loads(src.get_setting(rotation_key(SPACE, MODEL)))
    assert recorded["digest"] == first["rotation_digest"] and recorded["method"] == first["rotation"]


def _file_ids(index) -> list[tuple[int, int]]:
    """(inode, mtime_ns) of both files: what a rewrite changes."""
    return [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (index.path, index.codes_path)]


def test_a_few_additions_stay_in_the_tail_until_there_are_many(tmp_path, monkeypatch):
    """A checkpoint after additions only, at most TAIL_DEFER_MAX of them, leaves both files as
    they are (a rewrite took 147 s to add one photo to 5M vectors): the new vectors are searched
    exactly, by this store and by a fresh reader, and the state row says they were looked at.
    One more than that rewrites the files."""
    from xmr.store import binary

    monkeypatch.setattr(binary, "TAIL_DEFER_MAX", 50)
    src, index, ids, data, rng = filled(tmp_path, oversample=1000)
    first = index.checkpoint()
    files = _file_ids(index)
    new = clustered(rng, 50)
    new_ids = src.add(SPACE, MODEL, new)
    state = index.checkpoint()
    assert _file_ids(index) == files  # not rewritten
    assert state["element_count"] == first["element_count"] and state["max_vector_id"] == first["max_vector_id"]
    assert state["checked_max_vector_id"] == int(new_ids[-1]) and index.problem() == ""
    all_ids, everything = np.concatenate([ids, new_ids]), np.concatenate([data, new])
    q = np.concatenate([new[:3], clustered(rng, 3)])
    for store in (index, open_(tmp_path, src, readonly=True, oversample=1000)):
        np.testing.assert_array_equal(store.search(q, 10)[0], brute_force(q, all_ids, everything, 10))
        assert store.stats()["tail_count"] == 50 and store.fallback() == ""
    more_ids = src.add(SPACE, MODEL, clustered(rng, 1))  # 51 new since the files were written
    state = index.checkpoint()
    assert _file_ids(index) != files
    assert state["element_count"] == len(ids) + 51 and state["max_vector_id"] == int(more_ids[-1])
    assert "checked_max_vector_id" not in state and index.problem() == ""
    assert state["rotation_digest"] == first["rotation_digest"]


@pytest.mark.parametrize("change", ["deletion", "damaged codes", "other rotation"])
def test_the_tail_does_not_wait_after_a_deletion_damage_or_another_rotation(tmp_path, change):
    src, index, ids, data, rng = filled(tmp_path, oversample=1000)
    index.checkpoint()
    src.add(SPACE, MODEL, clustered(rng, 5))  # a tail that could wait
    if change == "deletion":
        src.delete(SPACE, MODEL, ids[:1])
    elif change == "damaged codes":
        with open(index.codes_path, "r+b") as f:
            f.write(b"\0" * 8)  # the header's magic
    else:
        index = open_(tmp_path, src, rotation="itq")
    files = _file_ids(index)
    state = index.checkpoint()
    assert _file_ids(index) != files  # rewritten
    assert state["element_count"] == len(ids) + 5 - (change == "deletion") and "checked_max_vector_id" not in state


def test_a_fresh_reader_after_as_many_deletions_as_additions_skips_the_deleted(tmp_path):
    src, index, ids, data, rng = filled(tmp_path, oversample=1000)
    index.checkpoint()
    gone = ids[[0, 10, 500, len(ids) - 1]]  # the file's count, less 4, plus 4 new: the same total
    src.delete(SPACE, MODEL, gone)
    new_ids = src.add(SPACE, MODEL, data[[0, 10, 500, len(ids) - 1]])  # the same vectors again, new ids
    live_ids = np.concatenate([np.setdiff1d(ids, gone), new_ids])
    live = np.concatenate([data[np.isin(ids, live_ids)], data[[0, 10, 500, len(ids) - 1]]])
    reader = open_(tmp_path, src, readonly=True, oversample=1000)
    q = data[[0, 10, 500]]
    found, _ = reader.search(q, 5)
    assert not np.isin(found, gone).any()
    np.testing.assert_array_equal(found, brute_force(q, live_ids, live, 5))
    assert reader.stats()["tail_count"] == 4


def test_switching_from_hnswlib_removes_its_stale_file(tmp_path):
    src, _, ids, data, rng = filled(tmp_path)
    hnsw = open_index("hnswlib", tmp_path / "ann", src, SPACE, MODEL, DIM, exact_threshold=0)
    hnsw.checkpoint()
    assert hnsw.persisted()
    index = open_(tmp_path, src, oversample=1000)
    assert index.problem() != ""  # the state row is the other backend's
    index.checkpoint()
    assert not hnsw.persisted() and index.persisted() and index.problem() == ""
    q = near(rng, data, 2)
    np.testing.assert_array_equal(
        open_(tmp_path, src, readonly=True, oversample=1000).search(q, 5)[0], brute_force(q, ids, data, 5)
    )


def test_asking_for_another_rotation_learns_a_new_one(tmp_path):
    src, index, _, _, _ = filled(tmp_path)
    first = index.checkpoint()
    other = "itq" if first["rotation"] == "random" else "random"
    again = open_(tmp_path, src, rotation=other).checkpoint()
    assert again["rotation"] == other and again["rotation_digest"] != first["rotation_digest"]


# -- damage ---------------------------------------------------------------------------------------


def damaged(tmp_path: Path, how: str):
    src, index, ids, data, rng = filled(tmp_path)
    state = index.checkpoint()
    path = tmp_path / "ann" / state["codes_file"]
    raw = bytearray(path.read_bytes())
    at, _ = code_layout(DIM, DIM, len(ids))
    if how == "truncated":
        raw = raw[: len(raw) - 8]
    elif how == "garbage":
        raw[at:] = np.random.default_rng(9).integers(0, 256, len(raw) - at, dtype=np.uint8).tobytes()
    else:  # one flipped bit in a row no spot check reads
        raw[at + 8 * 5] ^= 0x10
    path.write_bytes(bytes(raw))
    return src, index, ids, data, rng


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_code_file_is_detected_and_search_scans_exactly(tmp_path, how):
    src, index, ids, data, rng = damaged(tmp_path, how)
    assert index.verify() != ""
    reader = open_(tmp_path, src, readonly=True, mapped=True, oversample=1)
    q = clustered(rng, 3)
    found, _ = reader.search(q, 10)
    np.testing.assert_array_equal(found, brute_force(q, ids, data, 10))  # oversample 1 would miss some
    assert "codes unusable" in reader.fallback()
    assert reader.stats()["codes"]["usable"] is False
    assert reader.stats()["codes"]["last_search"]["path"] == "exact"


def test_a_flipped_code_bit_fails_the_full_check_and_is_discarded(tmp_path):
    src, index, ids, data, rng = damaged(tmp_path, "flipped")
    assert index.problem() == ""  # cheap checks cannot see it; the codes only rank, rescoring is exact
    assert "checksum" in index.verify()
    assert index.discard_if_damaged() is True and not index.persisted()
    reader = open_(tmp_path, src, readonly=True, oversample=1)
    q = clustered(rng, 2)
    np.testing.assert_array_equal(reader.search(q, 10)[0], brute_force(q, ids, data, 10))
    assert reader.fallback() != ""  # exact from the catalogue: no files
    assert index.problem() != ""  # the next index run rebuilds them


def test_a_damaged_vector_file_is_answered_from_the_catalogue(tmp_path):
    src, index, ids, data, rng = filled(tmp_path)
    state = index.checkpoint()
    path = tmp_path / "ann" / state["file"]
    path.write_bytes(path.read_bytes()[:-16])
    reader = open_(tmp_path, src, readonly=True, mapped=True)
    q = clustered(rng, 2)
    np.testing.assert_array_equal(reader.search(q, 10)[0], brute_force(q, ids, data, 10))
    assert "size" in reader.fallback()
    assert index.problem() != ""


# -- which backend an index run uses ----------------------------------------------------------------


class _Cat(MemoryVectorSource):
    """The catalogue surface ``choose_backend`` uses."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self._count = count

    def active_model(self, space: str) -> str | None:
        return MODEL if space == SPACE else None

    def vector_count(self, space: str, model_id: str) -> int:
        return self._count

    def transaction(self):
        import contextlib

        return contextlib.nullcontext()


def test_auto_switches_to_codes_from_the_threshold_and_an_explicit_choice_sticks():
    small, big = _Cat(AUTO_CODES_MIN - 1), _Cat(AUTO_CODES_MIN)
    assert choose_backend(small, None) == "hnswlib" and small.get_setting(BACKEND_SETTING) == "hnswlib"
    assert choose_backend(big, None) == "binary" and big.get_setting(BACKEND_SETTING) == "binary"
    assert big.get_setting(CODES_SETTING) is None  # auto is not recorded
    assert choose_backend(small, "binary") == "binary"
    assert small.get_setting(CODES_SETTING) == "binary"
    assert choose_backend(small, None) == "binary"  # kept by a later run
    assert choose_backend(big, "none") == "hnswlib" and choose_backend(big, None) == "hnswlib"
    assert choose_backend(big, "auto") == "binary"
    plugin = _Cat(AUTO_CODES_MIN)
    plugin.set_setting(BACKEND_SETTING, "faiss")
    assert choose_backend(plugin, None) == "faiss"  # auto leaves a plugin's backend alone
    with pytest.raises(UsageError, match="XMR_CODES"):
        check_codes("yes")


@pytest.mark.usefixtures("fake_encoders")
def test_index_codes_option_is_recorded_and_status_says_which_is_active(tmp_path, monkeypatch):
    root = tmp_path / "media"
    root.mkdir()
    make_text(root / "a.txt", 1, words=30)
    r = invoke("index", str(root), "--quiet", "--codes", "binary")
    assert r.exit_code == 0, r.stderr
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        assert cat.get_setting(BACKEND_SETTING) == "binary" and cat.get_setting(CODES_SETTING) == "binary"
    status = json.loads(invoke("status", "--json").stdout)
    assert status["vector_index"]["codes"] == "binary" and status["vector_index"]["backend"] == "binary"
    assert "codes: binary" in invoke("status").stdout
    assert invoke("search", "lighthouse", "--json").exit_code == 0
    monkeypatch.setenv("XMR_CODES", "none")
    assert invoke("index", str(root), "--quiet").exit_code == 0
    status = json.loads(invoke("status", "--json").stdout)
    assert status["vector_index"] == {**status["vector_index"], "codes": "none", "choice": "none"}
    r = invoke("index", str(root), "--codes", "maybe")
    assert r.exit_code != 0 and "--codes" in r.stderr


def test_a_large_file_is_ranked_in_two_passes_and_finds_near_duplicates(tmp_path, monkeypatch):
    from xmr.store import binary

    monkeypatch.setattr(binary, "PREFILTER_SHARE", 10**9)  # keep only PREFILTER_KEEP * rescored rows
    rng = np.random.default_rng(11)
    dim, groups, size = 256, 300, 10  # 4 words a code: the first 2 prefilter
    base = rng.standard_normal((groups, dim))
    x = np.repeat(base, size, axis=0) + 1e-3 * rng.standard_normal((groups * size, dim))
    data = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    src = MemoryVectorSource()
    ids = src.add(SPACE, MODEL, data)
    opts = {"exact_threshold": 0, "scan_below": 0, "oversample": 2}
    open_index("binary", tmp_path, src, SPACE, MODEL, dim, **opts).checkpoint()
    reader = open_index("binary", tmp_path, src, SPACE, MODEL, dim, readonly=True, **opts)
    pick = rng.choice(groups, 5, replace=False)
    q = data[pick * size + 3]
    found, sims = reader.search(q, size)
    for row, g in enumerate(pick):  # exactly the query's group: its own vector first
        assert set(found[row].tolist()) == set(ids[g * size : (g + 1) * size].tolist())
        assert found[row, 0] == ids[g * size + 3] and sims[row, 0] == pytest.approx(1.0, abs=1e-5)
    assert reader.stats()["codes"]["last_search"] == {"path": "codes", "scored": 2 * size}


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_threaded_passes_and_selection_equal_one_thread(kernel, monkeypatch, threads):
    """Shares of the columns (first pass) and of the kept rows (their scores) on several threads,
    each with its own histogram and its own part of the selection, pick exactly the one-thread
    columns, ties at the cut straddling the shares included."""
    monkeypatch.setattr(codes_module, "ROW_CHUNK", 64)  # 8 x 64 columns a share: many shares at this size
    monkeypatch.setattr(codes_module, "ROWS_PER_WORKER", 100)
    rng = np.random.default_rng(20 + threads)
    words, n = 3, 6000
    codes = random_codes(rng, words, n)
    codes[:, ::3] = codes[:, 9:10]  # a third of the columns at one distance: the cut falls among them
    q = codes[:, 9].copy() ^ np.uint64(0b1011)
    dist = naive_distances(q, codes)
    allowed = rng.random(n) < 0.8
    for count in (1, 700, 2500, n):
        for kw, admitted in (({}, np.ones(n, bool)), ({"allowed": allowed}, allowed)):
            one = nearest(q, codes, count, threads=1, **kw)
            np.testing.assert_array_equal(nearest(q, codes, count, threads=threads, **kw), one)
            np.testing.assert_array_equal(one, naive_nearest(dist, count, admitted))
    proj = rng.standard_normal(64 * words).astype(np.float32)
    rows = np.sort(rng.choice(n, 4000, replace=False))
    np.testing.assert_array_equal(scores(proj, codes, rows, threads=threads), scores(proj, codes, rows, threads=1))
