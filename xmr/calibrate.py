"""Calibrate raw cosine scores per space so results from different spaces merge.

Why: raw cosines are not comparable across embedding spaces. CLIP
text<->image cosines live around 0.2-0.35, CLAP text<->audio and text<->text
much higher, so merging raw scores ranks the CLAP space's *background* above
CLIP's best match. What is comparable is how unusual a score is *for this
query in this space*.

Method (per query, per space):

1. Background. ``background_sample`` draws a fixed, deterministic sample of up
   to ``n`` (2048) vectors of the space: the live ids with the smallest
   ``splitmix64(id ^ seed)`` hash. The hash makes it a uniform random sample,
   and it is stable: as the catalogue grows, only the few new ids whose hash
   is smaller enter it, so a query's calibration barely moves between runs.
   The sample may be cached on disk; only members not in the cache are read.
2. The query's background distribution: s_i = <q, b_i>. Relevant items are
   a vanishing share of a random sample, so this is the distribution of
   this query's similarity to unrelated items of this space.
3. Fit (``Calibrator.fit``): robust location/scale (median, 1.4826 * MAD),
   and a peaks-over-threshold tail: above u, the background value with
   t = max(10, 5 %) values beyond it, excesses are modelled as exponential
   (generalised Pareto with shape 0), beta = median(excess) / ln 2 (the
   median, not the mean, so a planted/relevant item in the sample does not
   inflate the tail), floored at 0.25 * scale.
4. Calibration: a raw score r maps to its tail probability
   p(r) = P(background >= r), from the empirical survival function
   (linearly interpolated) below u and p_u * exp(-(r - u) / beta) above it,
   computed in log space so it never underflows. The calibrated score is
   z = Phi^-1(1 - p): "as rare among this query's background as a z-sigma
   Gaussian event", which means the same in every space. ``score`` maps it to
   0..1 as Phi(z) = 1 - p (saturates near 1 for strong matches, so rank by z).
5. Tiny spaces (fewer than 20 background vectors): no tail can be fitted;
   z = (r - median) / max(robust scale, PRIOR_SCALE), PRIOR_SCALE = 0.1
   deliberately wider than the per-query spreads we expect (CLIP ~0.03,
   CLAP ~0.05-0.1; an assumption, not measured on real models here) so a
   handful of items cannot claim extreme significance. With
   no background at all, loc = 0 and scale = 1 (z is the raw cosine).

Merging is done in one place, ``xmr.search``: the hits of every group are
ranked by z and collapsed to one per file.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from xmr import paths
from xmr.errors import UsageError
from xmr.store.source import VectorSource

MIN_BACKGROUND = 20  # below this, no distribution is fitted (prior scale)
PRIOR_SCALE = 0.1
TAIL_FRACTION = 0.05
MIN_TAIL = 10
_MAD_TO_STD = 1.4826
_NORMAL = NormalDist()
_LOG_2PI = math.log(2 * math.pi)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A good 64-bit integer hash (vectorised); wraps modulo 2**64 by design."""
    z = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sample_ids(live_ids: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """The (sorted) members of the deterministic background sample among ``live_ids``."""
    live = np.asarray(live_ids, dtype=np.int64)
    if len(live) <= n:
        return np.sort(live)
    h = _splitmix64(live.astype(np.uint64) ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
    return np.sort(live[np.argpartition(h, n - 1)[:n]])


def background_sample(
    source: VectorSource,
    space: str,
    model_id: str,
    n: int = 2048,
    seed: int = 0,
    *,
    ids: np.ndarray | None = None,
    cache_dir: Path | None = None,
) -> np.ndarray:
    """A fixed, deterministic sample (float32 (<=n, dim)) of the space's live vectors.

    ``ids`` restricts the population (e.g. to one modality). ``cache_dir``
    keeps the sample in ``bg-*.npz`` there: members already cached are not
    read again, so after growth only new members are fetched.
    """
    if n < 1:
        raise UsageError(f"background size must be >= 1, got {n}")
    live = source.live_vector_ids(space, model_id)
    if ids is not None:
        live = np.intersect1d(live, np.asarray(ids, dtype=np.int64))
    want = sample_ids(live, n, seed)
    if len(want) == 0:
        return np.empty((0, 0), np.float32)

    cache_file = None
    have: dict[int, np.ndarray] = {}
    if cache_dir is not None:
        cache_file = Path(cache_dir) / _cache_name(space, model_id, n, seed, ids)
        have = _read_cache(cache_file)
    missing = want[~np.isin(want, np.fromiter(have, np.int64, len(have)))]
    if len(missing):
        have.update(_fetch(source, space, model_id, missing, len(live)))
    got = [i for i in want.tolist() if i in have]  # a member deleted meanwhile is skipped
    out = np.stack([have[i] for i in got]).astype(np.float32) if got else np.empty((0, 0), np.float32)
    if cache_file is not None and len(missing):
        with contextlib.suppress(OSError):  # a cache that cannot be written is just not kept
            _write_cache(cache_file, np.asarray(got, np.int64), out)
            _prune(cache_file)
    return out


_KEEP_PER_MODEL = 8  # the groups of a few recent generations; older ones are never asked for again


def _prune(written: Path) -> None:
    """Each generation's groups get files of their own (named by their ids): keep the newest few per model."""
    prefix = written.name.rsplit("-", 1)[0] + "-"
    files = []
    for p in written.parent.glob(f"{glob.escape(prefix)}*.npz"):
        with contextlib.suppress(OSError):
            files.append((p.stat().st_mtime_ns, p))
    files.sort(reverse=True)
    for _, p in files[_KEEP_PER_MODEL:]:
        if p != written:
            with contextlib.suppress(OSError):
                p.unlink()


def _fetch(source: VectorSource, space: str, model_id: str, ids: np.ndarray, population: int) -> dict[int, np.ndarray]:
    by_id = getattr(source, "vectors_by_id", None)
    if by_id is not None:  # the catalogue: a few chunked lookups by primary key
        got = by_id(ids.tolist())
        return {i: np.array(got[i], np.float32) for i in ids.tolist() if i in got}
    out: dict[int, np.ndarray] = {}
    if len(ids) * 8 >= population:  # a large share: one streaming pass is cheaper
        for batch_ids, vecs in source.iter_vectors(space, model_id, after_id=0):
            hit = np.isin(batch_ids, ids)
            for i, v in zip(np.asarray(batch_ids)[hit].tolist(), vecs[hit], strict=True):
                out[i] = np.array(v, np.float32)
        return out
    for i in ids.tolist():  # one indexed lookup per member
        with contextlib.closing(source.iter_vectors(space, model_id, after_id=i - 1, batch=1)) as it:
            for batch_ids, vecs in it:
                if len(batch_ids) and int(batch_ids[0]) == i:
                    out[i] = np.array(vecs[0], np.float32)
                break
    return out


def _cache_name(space: str, model_id: str, n: int, seed: int, ids: np.ndarray | None) -> str:
    h = hashlib.blake2b(f"{space}\0{model_id}\0{n}\0{seed}".encode(), digest_size=8)
    if ids is not None:
        h.update(np.unique(np.asarray(ids, np.int64)).tobytes())
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{space}--{model_id}")[:48]
    return f"bg-{slug}-{h.hexdigest()}.npz"


def _read_cache(path: Path) -> dict[int, np.ndarray]:
    try:
        with np.load(path) as z:
            ids, vecs = z["ids"], z["vectors"]
    except (OSError, KeyError, ValueError, EOFError):
        return {}  # missing or unreadable: it is only a cache
    if ids.ndim != 1 or vecs.ndim != 2 or len(ids) != len(vecs):
        return {}
    return dict(zip(ids.tolist(), vecs, strict=True))


def _write_cache(path: Path, ids: np.ndarray, vecs: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, ids=ids, vectors=vecs)
    paths.write_private_file(path, buf.getvalue())


def _gauss_log_sf(z: float) -> float:
    """log P(N(0,1) >= z), accurate in the far tail."""
    if z < 30:
        return math.log(max(0.5 * math.erfc(z / math.sqrt(2)), 1e-300))
    return -0.5 * z * z - math.log(z) - 0.5 * _LOG_2PI  # Mills ratio, exact to 1/z^2


def _z_from_log_p(log_p: float) -> float:
    """z with P(N(0,1) >= z) = exp(log_p), without underflow for tiny p."""
    if log_p > -690:  # exp() representable: the exact inverse
        p = math.exp(log_p)
        return -_NORMAL.inv_cdf(p) if p < 1.0 else -40.0
    # Mills ratio: log p ~ -z^2/2 - log z - log(2 pi)/2; fixed point converges fast
    z = math.sqrt(-2.0 * log_p)
    for _ in range(8):
        z = math.sqrt(max(-2.0 * (log_p + math.log(z) + 0.5 * _LOG_2PI), 1e-12))
    return z


@dataclass(frozen=True)
class Calibrator:
    """Maps one query's raw cosines in one space to comparable z-like scores."""

    loc: float
    scale: float
    n: int
    sorted_bg: np.ndarray  # the background similarities, ascending (empty if tiny)
    tail_u: float = math.nan
    tail_log_p: float = math.nan  # log P(background >= tail_u)
    tail_beta: float = math.nan

    @classmethod
    def fit(cls, query_vec: np.ndarray, background_vectors: np.ndarray, **kw: float) -> Calibrator:
        """Fit to the similarities between ``query_vec`` (dim,) and the background (n, dim)."""
        bg = np.asarray(background_vectors, dtype=np.float32)
        q = np.asarray(query_vec, dtype=np.float32).ravel()
        if bg.size == 0:
            return cls.fit_similarities(np.empty(0, np.float32), **kw)
        if bg.ndim != 2 or bg.shape[1] != len(q):
            raise UsageError(f"background has shape {bg.shape}, query dimension is {len(q)}")
        return cls.fit_similarities(bg @ q, **kw)

    @classmethod
    def fit_similarities(
        cls,
        sims: np.ndarray,
        *,
        prior_scale: float = PRIOR_SCALE,
        min_background: int = MIN_BACKGROUND,
    ) -> Calibrator:
        """Fit from precomputed query-to-background similarities."""
        s = np.sort(np.asarray(sims, dtype=np.float64).ravel())
        s = s[np.isfinite(s)]
        n = len(s)
        if n == 0:
            return cls(loc=0.0, scale=1.0, n=0, sorted_bg=s)
        loc = float(np.median(s))
        robust = _MAD_TO_STD * float(np.median(np.abs(s - loc)))
        if robust <= 1e-6:  # more than half identical: MAD says nothing
            robust = float(s.std())
        if n < min_background:
            return cls(loc=loc, scale=max(robust, prior_scale), n=n, sorted_bg=np.empty(0))
        scale = max(robust, 1e-4)
        t = min(n - 1, max(MIN_TAIL, math.ceil(TAIL_FRACTION * n)))
        u = float(s[n - 1 - t])
        excess = s[n - t :] - u
        beta = max(float(np.median(excess)) / math.log(2), 0.25 * scale)
        log_pu = math.log(_survival(s, np.array([u]))[0])
        return cls(loc=loc, scale=scale, n=n, sorted_bg=s, tail_u=u, tail_log_p=log_pu, tail_beta=beta)

    def log_p(self, raw: np.ndarray) -> np.ndarray:
        """log P(a background item scores >= raw), per element."""
        r = np.asarray(raw, dtype=np.float64)
        if not len(self.sorted_bg):  # tiny space: Gaussian with the prior scale
            return np.vectorize(_gauss_log_sf, otypes=[float])((r - self.loc) / self.scale)
        out = np.log(_survival(self.sorted_bg, r))
        above = r > self.tail_u
        out[above] = self.tail_log_p - (r[above] - self.tail_u) / self.tail_beta
        return out

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """z-like calibrated scores: comparable across spaces, higher is better."""
        lp = self.log_p(raw)
        return np.vectorize(_z_from_log_p, otypes=[float])(lp) if lp.size else lp.astype(float)

    z = calibrate

    def score(self, raw: np.ndarray) -> np.ndarray:
        """0..1: Phi(z) = 1 - P(background >= raw)."""
        return -np.expm1(self.log_p(raw))


def _survival(sorted_bg: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Empirical P(X >= r), plotting positions (i - 0.5)/n, linearly interpolated."""
    n = len(sorted_bg)
    surv = 1.0 - (np.arange(1, n + 1) - 0.5) / n
    return np.interp(r, sorted_bg, surv, left=1.0 - 0.5 / n, right=0.5 / n)


def fit_calibrators(queries: np.ndarray, background_vectors: np.ndarray, **kw: float) -> list[Calibrator]:
    """One Calibrator per query row, with a single matrix product."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    bg = np.asarray(background_vectors, dtype=np.float32)
    if bg.size == 0:
        return [Calibrator.fit_similarities(np.empty(0), **kw) for _ in q]
    sims = q @ bg.T
    return [Calibrator.fit_similarities(row, **kw) for row in sims]
