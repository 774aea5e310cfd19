"""Benchmark the hnswlib vector index (xmr.store.hnsw) on synthetic 512-d embeddings.

    python benchmarks/search.py --sizes 10000,100000,1000000 --queries 200
    python benchmarks/search.py --crossover          # exact vs HNSW latency, small sizes

For every size: checkpoint (HNSW build + atomic save + checksum) time, the
open time of a fresh store (checksum verification + load), single-query
search latency p50/p99 at k=10 through VectorStore.search, recall@10 against
exact search, an ef sweep, the RSS growth of the build, the index file size,
and the exact (brute-force numpy over an in-memory matrix) latency for
comparison.

Synthetic data (``clustered``): real embeddings are not uniform on the
sphere; they share a common direction (pairwise cosines well above 0), sit
in clusters of uneven size and have a low intrinsic dimension. So every
vector is ``normalise(normalise(B z + e) + 0.8 c)`` where ``c`` is one common
unit direction, ``B`` an orthonormal 64x512 basis, ``z`` = a cluster centre
(256 clusters, N(0, I) in 64-d, Dirichlet(2) weights) plus per-cluster
Gaussian spread (0.4..0.9), and ``e`` small isotropic 512-d noise. Pairwise
cosine is ~0.39 +- 0.07 and a query's nearest neighbour ~0.82, roughly like
CLIP image embeddings. Queries are fresh draws from the same model
(``draw=1``), never members of the set.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xmr.store.hnsw import HnswStore as VectorStore
from xmr.store.hnsw_build import DEFAULT_PARAMS, HnswParams
from xmr.store.memory import MemoryVectorSource


def clustered(
    n: int,
    dim: int = 512,
    *,
    seed: int = 0,
    draw: int = 0,
    n_clusters: int = 256,
    latent: int = 64,
    chunk: int = 100_000,
    anisotropic: bool = False,
) -> np.ndarray:
    """n clustered unit vectors; ``seed`` fixes the model, ``draw`` the sample.

    ``anisotropic``: each cluster is stretched along its own latent axes (per-axis
    scales from a decaying spectrum, shuffled per cluster, mean square 1), as real
    embedding clusters are elongated rather than round; off keeps the original model.
    """
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, latent)))[0].T.astype(np.float32)
    common = rng.standard_normal(dim).astype(np.float32)
    common /= np.linalg.norm(common)
    centers = rng.standard_normal((n_clusters, latent)).astype(np.float32)
    spreads = rng.uniform(0.4, 0.9, n_clusters).astype(np.float32)
    weights = rng.dirichlet(np.full(n_clusters, 2.0))
    axes = np.ones((n_clusters, latent), np.float32)
    if anisotropic:  # drawn after the rest so the isotropic model is unchanged
        spectrum = 1.0 / np.sqrt(1.0 + np.arange(latent, dtype=np.float32))
        spectrum /= np.sqrt(np.mean(spectrum**2))
        axes = np.stack([rng.permutation(spectrum) for _ in range(n_clusters)]).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    iso = 0.5 * np.sqrt(latent / dim)
    for i, s in enumerate(range(0, n, chunk)):
        m = min(chunk, n - s)
        r = np.random.default_rng([seed, draw, i])
        c = r.choice(n_clusters, p=weights, size=m)
        z = centers[c] + spreads[c, None] * axes[c] * r.standard_normal((m, latent), dtype=np.float32)
        x = z @ basis + iso * r.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x += 0.8 * common
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s : s + m] = x
    return out


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def latencies(fn, queries: np.ndarray, rounds: int = 1) -> np.ndarray:
    out = []
    for _ in range(rounds):
        for i in range(len(queries)):
            t = time.perf_counter()
            fn(queries[i : i + 1])
            out.append(time.perf_counter() - t)
    return np.array(out) * 1e3


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a[:k]) & set(b)) / k for a, b in zip(found, truth, strict=True)]))


def exact_numpy(matrix: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    sims = q @ matrix.T
    return np.argpartition(-sims, k - 1, axis=1)[:, :k]


def bench_size(n: int, args: argparse.Namespace, workdir: Path) -> None:
    params = HnswParams(M=args.M, ef_construction=args.ef_construction, ef_search=args.ef)
    t = time.perf_counter()
    data = clustered(n, args.dim)
    queries = clustered(args.queries, args.dim, draw=1)
    gen_s = time.perf_counter() - t
    src = MemoryVectorSource()
    src.add("clip", "bench", data)
    print(f"\n== n={n:,} dim={args.dim}  (generated in {gen_s:.1f}s)", flush=True)

    store = VectorStore(workdir, src, "clip", "bench", args.dim, exact_threshold=0, params=params)
    gc.collect()
    rss0 = rss_mb()
    t = time.perf_counter()
    state = store.checkpoint()
    build_s = time.perf_counter() - t
    rss1 = rss_mb()
    print(
        f"build+checkpoint: {build_s:.1f}s ({n / build_s:,.0f} vec/s, load avg {os.getloadavg()[1]:.1f} "
        f"on {os.cpu_count()} cpus)  RSS +{rss1 - rss0:,.0f} MB  "
        f"peak RSS {peak_mb():,.0f} MB  file {state['file_size'] / 2**20:,.1f} MB",
        flush=True,
    )
    del store
    gc.collect()

    # a fresh process-like open: verify the checksum, check the header, load
    store = VectorStore(workdir, src, "clip", "bench", args.dim, exact_threshold=0, params=params)
    t = time.perf_counter()
    store.search(queries[:1], args.k)
    open_s = time.perf_counter() - t
    assert store.last_rebuild_reason is None, store.last_rebuild_reason
    print(f"open (checksum + load + live ids) + first search: {open_s:.2f}s", flush=True)

    t = time.perf_counter()
    truth, _ = store.exact_search(queries, args.k)
    print(f"exact ground truth for {len(queries)} queries (batched, streamed): {time.perf_counter() - t:.1f}s")

    for ef in sorted({*args.ef_sweep, args.ef}):
        store.params = HnswParams(M=args.M, ef_construction=args.ef_construction, ef_search=ef)
        lat = latencies(lambda q: store.search(q, args.k), queries)
        found, _ = store.search(queries, args.k)
        mark = "  <- default" if ef == args.ef else ""
        print(
            f"  hnsw ef={ef:<4d} recall@{args.k}={recall(found, truth):.4f}  "
            f"p50={np.median(lat):.3f}ms  p99={np.percentile(lat, 99):.3f}ms{mark}",
            flush=True,
        )
    store.params = params

    n_exact = min(len(queries), args.exact_queries)
    lat = latencies(lambda q: exact_numpy(data, q, args.k), queries[:n_exact])
    print(
        f"  exact numpy (in-memory matrix, {n_exact} queries): p50={np.median(lat):.3f}ms "
        f"p99={np.percentile(lat, 99):.3f}ms",
        flush=True,
    )


def crossover(args: argparse.Namespace, workdir: Path) -> None:
    """Single-query latency of the store's exact mode vs its HNSW mode by size."""
    print("crossover: VectorStore.search, single query, k=10, p50/p99 over 2x200 queries (ms)")
    print(f"{'n':>7} {'exact p50':>10} {'exact p99':>10} {'hnsw p50':>9} {'hnsw p99':>9} {'recall':>7}")
    queries = clustered(200, args.dim, draw=1)
    params = HnswParams(M=args.M, ef_construction=args.ef_construction, ef_search=args.ef)
    for n in args.crossover_sizes:
        src = MemoryVectorSource()
        src.add("clip", "x", clustered(n, args.dim))
        d = workdir / f"x{n}"
        exact = VectorStore(d, src, "clip", "x", args.dim, exact_threshold=10**12, params=params)
        ann = VectorStore(d, src, "clip", "x", args.dim, exact_threshold=0, params=params)
        ann.checkpoint()
        exact.search(queries[:1], args.k)
        ann.search(queries[:1], args.k)
        le = latencies(lambda q, s=exact: s.search(q, args.k), queries, rounds=2)
        lh = latencies(lambda q, s=ann: s.search(q, args.k), queries, rounds=2)
        r = recall(ann.search(queries, args.k)[0], exact.search(queries, args.k)[0])
        print(
            f"{n:>7} {np.median(le):>10.3f} {np.percentile(le, 99):>10.3f} "
            f"{np.median(lh):>9.3f} {np.percentile(lh, 99):>9.3f} {r:>7.4f}",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--exact-queries", type=int, default=50, help="queries timed for exact latency")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--M", type=int, default=DEFAULT_PARAMS.M)
    p.add_argument("--ef-construction", type=int, default=DEFAULT_PARAMS.ef_construction)
    p.add_argument("--ef", type=int, default=DEFAULT_PARAMS.ef_search)
    p.add_argument("--ef-sweep", default="64,100,150,200,256")
    p.add_argument("--crossover", action="store_true", help="measure the exact/HNSW latency crossover")
    p.add_argument("--crossover-sizes", default="1000,1500,2000,3000,4000,6000,8000,12000,16000")
    p.add_argument("--dir", default=None, help="where index files go (default: a temp dir)")
    args = p.parse_args()
    args.ef_sweep = [int(x) for x in args.ef_sweep.split(",") if x]
    args.crossover_sizes = [int(x) for x in args.crossover_sizes.split(",") if x]

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, python {sys.version.split()[0]}, "
        f"numpy {np.__version__}; HNSW M={args.M} efC={args.ef_construction} ef={args.ef}"
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        if args.crossover:
            crossover(args, Path(tmp))
            return
        for n in (int(x) for x in args.sizes.split(",")):
            bench_size(n, args, Path(tmp) / str(n))


if __name__ == "__main__":
    main()
