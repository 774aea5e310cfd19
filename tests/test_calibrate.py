from __future__ import annotations

import math

import numpy as np
import pytest

from xmr.calibrate import (
    PRIOR_SCALE,
    Calibrator,
    background_sample,
    fit_calibrators,
    sample_ids,
)
from xmr.store.hnsw import HnswStore as VectorStore
from xmr.store.memory import MemoryVectorSource

DIM = 64
MODEL = "m"


def with_cosines(rng: np.random.Generator, q: np.ndarray, cosines: np.ndarray) -> np.ndarray:
    """Unit vectors whose cosine to the unit vector q is exactly ``cosines``."""
    u = rng.standard_normal((len(cosines), len(q))).astype(np.float64)
    u -= np.outer(u @ q, q)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    a = np.clip(cosines, -1, 1)[:, None]
    return (a * q + np.sqrt(1 - a * a) * u).astype(np.float32)


def unit(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal(dim)
    return v / np.linalg.norm(v)


@pytest.fixture
def two_spaces(tmp_path):
    """CLIP-like space (background cos 0.2 +- 0.03) and CLAP-like (0.6 +- 0.06),
    each with one planted match 5.5 sigma above its own background. The CLIP
    match (0.365) is far below the CLAP background (0.6)."""
    rng = np.random.default_rng(7)
    src = MemoryVectorSource()
    spaces = {"clip": (0.2, 0.03), "clap": (0.6, 0.06)}
    queries, planted = {}, {}
    for space, (mu, sd) in spaces.items():
        q = unit(rng)
        bg = with_cosines(rng, q, rng.normal(mu, sd, 3000))
        src.add(space, MODEL, bg[:1500])
        planted[space] = int(src.add(space, MODEL, with_cosines(rng, q, np.array([mu + 5.5 * sd])))[0])
        src.add(space, MODEL, bg[1500:])
        queries[space] = q.astype(np.float32)
    stores = {s: VectorStore(tmp_path / "ann", src, s, MODEL, DIM) for s in spaces}
    return src, stores, queries, planted


def per_space_results(src, stores, queries, k=50):
    """(space, ids, raw cosines, that query's calibrator) per space."""
    results = []
    for space, store in stores.items():
        ids, raw = store.search(queries[space], k)
        bg = background_sample(src, space, MODEL, n=2048, seed=0)
        results.append((space, ids[0], raw[0], Calibrator.fit(queries[space], bg)))
    return results


def test_planted_matches_stand_out_after_calibration(two_spaces):
    """Calibrated z is comparable across spaces: both planted matches beat every
    background hit of either space (search ranks its merged list by it)."""
    src, stores, queries, planted = two_spaces
    hits = []  # (z, score, raw, space, id)
    for space, ids, raw, cal in per_space_results(src, stores, queries):
        for i, r, z, sc in zip(ids.tolist(), raw, cal.calibrate(raw), cal.score(raw), strict=True):
            hits.append((float(z), float(sc), float(r), space, int(i)))
    is_planted = {(s, i) for s, i in planted.items()}
    planted_z = [z for z, _, _, s, i in hits if (s, i) in is_planted]
    background_z = [z for z, _, _, s, i in hits if (s, i) not in is_planted]
    assert len(planted_z) == 2 and min(planted_z) > max(background_z)
    assert all(0.0 <= sc <= 1.0 and math.isfinite(sc) for _, sc, _, _, _ in hits)
    # the CLIP match really is below CLAP's background scale in raw terms
    clip_raw = next(r for _, _, r, s, i in hits if (s, i) == ("clip", planted["clip"]))
    assert clip_raw < 0.5 < np.median([r for _, _, r, s, _ in hits if s == "clap"])


def test_uncalibrated_merge_would_fail(two_spaces):
    """Guards the test above: ranking by raw cosine buries the CLIP match."""
    src, stores, queries, planted = two_spaces
    results = per_space_results(src, stores, queries)
    by_raw = sorted(
        ((float(r), space, int(i)) for space, ids, raw, _ in results for i, r in zip(ids, raw, strict=True)),
        reverse=True,
    )
    rank = [(space, i) for _, space, i in by_raw].index(("clip", planted["clip"]))
    assert rank >= 50  # below every CLAP result returned


def test_background_z_is_roughly_standard():
    rng = np.random.default_rng(0)
    sims = rng.normal(0.3, 0.05, 4000)
    cal = Calibrator.fit_similarities(sims[:2048])
    z = cal.calibrate(sims[2048:])
    assert abs(np.median(z)) < 0.1
    assert 0.03 < np.mean(z > 1.645) < 0.07
    # the same relative position gets the same z whatever the space's scale
    other = Calibrator.fit_similarities(0.7 + 2 * (sims[:2048] - 0.3))
    np.testing.assert_allclose(other.calibrate(0.7 + 2 * (sims[2048:] - 0.3)), z, atol=1e-6)


def test_calibration_is_monotone_and_finite_in_the_far_tail():
    rng = np.random.default_rng(1)
    cal = Calibrator.fit_similarities(rng.normal(0.2, 0.03, 2048))
    raw = np.linspace(-1, 1, 401)
    z = cal.calibrate(raw)
    assert np.all(np.isfinite(z))
    assert np.all(np.diff(z) >= 0)
    assert z[-1] > 10  # cos 1.0 is ~27 sigma out: extreme, but no underflow to inf/nan
    s = cal.score(raw)
    assert np.all((s >= 0) & (s <= 1)) and np.all(np.diff(s) >= 0)


def test_tiny_spaces_fall_back_to_a_prior_scale():
    few = Calibrator.fit_similarities(np.array([0.5, 0.52, 0.55]))
    assert few.scale == PRIOR_SCALE and few.loc == pytest.approx(0.52)
    z = few.calibrate(np.array([0.52, 0.72]))
    assert z[0] == pytest.approx(0.0, abs=1e-6) and z[1] == pytest.approx(2.0, abs=1e-3)
    empty = Calibrator.fit(np.ones(DIM) / 8, np.empty((0, DIM)))
    assert empty.calibrate(np.array([0.3]))[0] == pytest.approx(0.3, abs=1e-3)
    # a 5-item space cannot outrank a real, well-separated match in a big space
    rng = np.random.default_rng(2)
    big = Calibrator.fit_similarities(rng.normal(0.2, 0.03, 2048))
    tiny = Calibrator.fit_similarities(np.array([0.6, 0.62, 0.61, 0.64, 0.7]))
    assert big.calibrate(np.array([0.2 + 6 * 0.03]))[0] > tiny.calibrate(np.array([0.7]))[0]


def test_planted_item_in_the_background_barely_moves_the_fit():
    rng = np.random.default_rng(3)
    sims = rng.normal(0.2, 0.03, 1000)
    clean = Calibrator.fit_similarities(sims)
    dirty = Calibrator.fit_similarities(np.append(sims, [0.4, 0.42]))
    assert dirty.calibrate(np.array([0.38]))[0] == pytest.approx(clean.calibrate(np.array([0.38]))[0], rel=0.1)


def test_background_sample_is_deterministic_and_stable(tmp_path):
    rng = np.random.default_rng(4)
    src = MemoryVectorSource()
    src.add("clip", MODEL, rng.standard_normal((5000, DIM)).astype(np.float32))
    a = background_sample(src, "clip", MODEL, n=512, seed=0)
    b = background_sample(src, "clip", MODEL, n=512, seed=0)
    assert a.shape == (512, DIM) and np.array_equal(a, b)
    assert not np.array_equal(a, background_sample(src, "clip", MODEL, n=512, seed=1))
    before = set(sample_ids(src.live_vector_ids("clip", MODEL), 512).tolist())
    src.add("clip", MODEL, rng.standard_normal((500, DIM)).astype(np.float32))  # +10 %
    after = set(sample_ids(src.live_vector_ids("clip", MODEL), 512).tolist())
    assert len(before & after) >= 0.85 * 512
    # a space smaller than n: all of it
    src.add("clap", MODEL, rng.standard_normal((7, DIM)).astype(np.float32))
    assert background_sample(src, "clap", MODEL, n=512).shape == (7, DIM)
    assert background_sample(src, "none", MODEL).shape[0] == 0


def test_background_sample_cache_reads_only_new_members(tmp_path):
    rng = np.random.default_rng(5)
    src = MemoryVectorSource()
    src.add("clip", MODEL, rng.standard_normal((20000, DIM)).astype(np.float32))
    calls = []
    real = src.iter_vectors

    def counting(*a, **k):
        calls.append(k.get("after_id"))
        return real(*a, **k)

    src.iter_vectors = counting
    first = background_sample(src, "clip", MODEL, n=256, cache_dir=tmp_path)
    assert len(calls) == 256  # one lookup per member
    calls.clear()
    assert np.array_equal(background_sample(src, "clip", MODEL, n=256, cache_dir=tmp_path), first)
    assert calls == []
    src.add("clip", MODEL, rng.standard_normal((2000, DIM)).astype(np.float32))
    background_sample(src, "clip", MODEL, n=256, cache_dir=tmp_path)
    assert 0 < len(calls) < 64


def test_background_files_of_old_groups_are_pruned(tmp_path):
    """Each group (its ids) gets a file of its own; a growing index must not pile them up."""
    rng = np.random.default_rng(9)
    src = MemoryVectorSource()
    ids = src.add("clip", MODEL, rng.standard_normal((400, DIM)).astype(np.float32))
    for end in range(100, 400, 20):  # 15 generations of a growing group
        background_sample(src, "clip", MODEL, n=64, ids=ids[:end], cache_dir=tmp_path)
    newest = background_sample(src, "clip", MODEL, n=64, ids=ids, cache_dir=tmp_path)
    files = list(tmp_path.glob("bg-*.npz"))
    assert 1 < len(files) <= 8
    assert np.array_equal(background_sample(src, "clip", MODEL, n=64, ids=ids, cache_dir=tmp_path), newest)


def test_restricting_the_background_population():
    rng = np.random.default_rng(6)
    src = MemoryVectorSource()
    ids = src.add("clip", MODEL, rng.standard_normal((100, DIM)).astype(np.float32))
    sub = background_sample(src, "clip", MODEL, n=1000, ids=ids[:10])
    assert sub.shape == (10, DIM)


def test_fit_calibrators_matches_fit():
    rng = np.random.default_rng(8)
    bg = rng.standard_normal((300, DIM)).astype(np.float32)
    bg /= np.linalg.norm(bg, axis=1, keepdims=True)
    qs = bg[:3] + 0.1
    many = fit_calibrators(qs, bg)
    for q, cal in zip(qs, many, strict=True):
        one = Calibrator.fit(q, bg)
        assert cal.loc == pytest.approx(one.loc, abs=1e-6) and cal.scale == pytest.approx(one.scale, abs=1e-6)
