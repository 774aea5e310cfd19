"""1-bit codes (the ``binary`` backend) against exact float32 search: recall, time, memory.

    python benchmarks/codes.py --recall-n 1000000 --queries 200            # part 1 only
    python benchmarks/codes.py --recall-n 0 --process-n 5000000 --runs 5   # part 2 only

Vectors: ``realistic`` below, 512-d unit vectors that look like embeddings
where it matters to binary codes: clustered (256 clusters of Dirichlet sizes),
anisotropic and low-rank plus noise (a 64-d latent space whose axes' scales
fall off as a power law, i.e. a few directions carry most of the variance, then
isotropic noise in all 512), and a large common component shared by all
vectors (unrelated items' cosine ~0.5, as in CLIP), which a sign code must
centre away. ``benchmarks/search.py``'s ``clustered`` has all but the
anisotropy (its latent axes are equally scaled); uniform random vectors would
make every index look bad. Queries are fresh draws from the same model, not
stored vectors.

1. ``--recall-n`` (in process, a ``MemoryVectorSource``): the binary backend's
   files are written for each rotation (ITQ, random), then each query is
   searched alone (k=10) with every ``--oversample`` factor; recall@10 against
   the exact top-10, p50 search time, and against it the exact scan of the
   same mapped float32 file (the codes file moved away: what the reader does
   when the codes are unusable, and what the hnswlib reader's one-shot scan does).
2. ``--process-n``: a real index (``benchmarks/serve.py``'s random-weight models
   and bulk rows, the vectors as CLIP images) checkpointed with the binary
   backend; then whole processes: cold ``xmr search`` (query cache emptied;
   medians of ``--runs``; peak RSS of the child) with the codes and with the
   codes moved away (exact float32 scan), and ``xmr serve``'s POST /api/search
   p50 over ``--serve-queries`` distinct texts (each embedded, then searched).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO / "tests", REPO, REPO / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

SPACE, MODEL, DIM, K = "clip", "bench-model", 512, 10


def realistic(n: int, dim: int = DIM, *, seed: int = 0, draw: int = 0, chunk: int = 100_000) -> np.ndarray:
    """n unit vectors: clustered, anisotropic, low-rank plus noise, with a common component."""
    rng = np.random.default_rng(seed)
    latent, n_clusters = 64, 256
    basis = np.linalg.qr(rng.standard_normal((dim, latent)))[0].T.astype(np.float32)
    scales = (1.0 / np.arange(1, latent + 1) ** 0.5).astype(np.float32)  # power-law spectrum
    common = rng.standard_normal(dim).astype(np.float32)
    common /= np.linalg.norm(common)
    centers = rng.standard_normal((n_clusters, latent)).astype(np.float32) * scales
    spreads = rng.uniform(0.3, 0.8, n_clusters).astype(np.float32)
    weights = rng.dirichlet(np.full(n_clusters, 2.0))
    iso = 0.35 * np.sqrt(latent / dim) * float(scales.mean())
    out = np.empty((n, dim), np.float32)
    for i, s in enumerate(range(0, n, chunk)):
        m = min(chunk, n - s)
        r = np.random.default_rng([seed, draw, i])
        c = r.choice(n_clusters, p=weights, size=m)
        z = centers[c] + spreads[c, None] * scales * r.standard_normal((m, latent), dtype=np.float32)
        x = z @ basis + iso * r.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x += 0.9 * common
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s : s + m] = x
    return out


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def exact_topk(data: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    out = []
    for s in range(0, len(q), 25):
        sims = q[s : s + 25] @ data.T
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
        out.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(out)


def part_recall(args: argparse.Namespace, work: Path) -> None:
    from xmr.store.binary import BinaryStore
    from xmr.store.memory import MemoryVectorSource

    n = args.recall_n
    t0 = time.perf_counter()
    data = realistic(n)
    q = realistic(args.queries, draw=1)
    sims = q @ data[: min(n, 20_000)].T
    print(f"== 1. recall at {n:,} x {DIM} (generated in {time.perf_counter() - t0:.0f}s; query-vector cosine "
          f"p50 {np.median(sims):.2f}, p99.9 {np.percentile(sims, 99.9):.2f}); load {load()}", flush=True)
    src = MemoryVectorSource()
    ids = src.add(SPACE, MODEL, data)
    truth = ids[exact_topk(data, q, K)]
    del sims
    oversamples = [int(x) for x in args.oversample.split(",")]
    print(f"| rotation | oversample | rescored | recall@{K} | search p50 ms | p95 ms | build s | codes MB |")
    print("|---|---|---|---|---|---|---|---|")
    ann = work / "ann-recall"
    for rotation in args.rotations.split(","):
        shutil.rmtree(ann, ignore_errors=True)
        t0 = time.perf_counter()
        state = BinaryStore(ann, src, SPACE, MODEL, DIM, rotation=rotation).checkpoint()
        build = time.perf_counter() - t0
        codes_mb = state["codes_size"] / 2**20
        for over in oversamples:
            reader = BinaryStore(ann, src, SPACE, MODEL, DIM, readonly=True, mapped=True, oversample=over)
            reader.search(q[:1], K)  # opens: maps the files, reads the ids
            times, hits = [], 0
            for i in range(len(q)):
                t1 = time.perf_counter()
                found, _ = reader.search(q[i : i + 1], K)
                times.append(time.perf_counter() - t1)
                hits += len(np.intersect1d(found[0], truth[i]))
            reader.close()
            print(f"| {rotation} | {over} | {over * K} | {hits / (K * len(q)):.4f} | "
                  f"{1000 * statistics.median(times):.1f} | {1000 * np.percentile(times, 95):.1f} | "
                  f"{build:.0f} | {codes_mb:.0f} |", flush=True)
    # the exact scan of the same mapped float32 file (codes moved away)
    codes = BinaryStore(ann, src, SPACE, MODEL, DIM).codes_path
    codes.rename(codes.with_suffix(".away"))
    reader = BinaryStore(ann, src, SPACE, MODEL, DIM, readonly=True, mapped=True)
    reader.search(q[:1], K)
    times, hits = [], 0
    for i in range(min(len(q), 50)):
        t1 = time.perf_counter()
        found, _ = reader.search(q[i : i + 1], K)
        times.append(time.perf_counter() - t1)
        hits += len(np.intersect1d(found[0], truth[i]))
    print(f"| exact float32 scan | - | {n:,} | {hits / (K * len(times)):.4f} | "
          f"{1000 * statistics.median(times):.1f} | {1000 * np.percentile(times, 95):.1f} | - | - |")
    print(f"# files: float32 {state['file_size'] / 2**20:.0f} MB ({state['file_size'] / n:.0f} B a vector), "
          f"codes {state['codes_size'] / 2**20:.0f} MB ({state['codes_size'] / n:.0f} B a vector); "
          f"a codes search reads all codes + rescored x 2 KB; load {load()}", flush=True)
    reader.close()
    shutil.rmtree(ann, ignore_errors=True)


def build_index(index_dir: Path, n: int, env: dict[str, str]) -> tuple[str, float, float]:
    """n realistic vectors as CLIP image rows of the configured model, checkpointed with the codes."""
    from xmr import paths
    from xmr.catalogue import Catalogue, now_iso
    from xmr.encoders import load_encoder, release
    from xmr.search import prepare_state
    from xmr.settings import Settings
    from xmr.store import BACKEND_SETTING
    from xmr.store.binary import BinaryStore

    os.environ.update(env)
    settings = Settings.from_env()
    enc = load_encoder("clip", settings)
    info = enc.info
    seen = now_iso()
    t0 = time.perf_counter()
    chunk = 100_000
    with Catalogue.open(index_dir, create=True) as cat:
        with cat.transaction() as conn:
            cat.ensure_model(info, settings.clip_model)
            cat.set_setting("active_model.clip", info.model_id)
            cat.set_setting(BACKEND_SETTING, "binary")
        # Bulk load of a throwaway index: no rollback journal, no fsync (the WAL wrote every
        # 4 KB page twice: ~23 GB at 5M), a bigger page cache for the indexes. The file is the
        # same SQLite database; WAL is switched back on below, as xmr leaves it.
        cat.conn.execute("PRAGMA journal_mode = OFF")
        cat.conn.execute("PRAGMA synchronous = OFF")
        cat.conn.execute("PRAGMA cache_size = -262144")
        for s in range(0, n, chunk):
            vecs = realistic(min(chunk, n - s), info.dim, draw=s // chunk + 10)  # +10: not the queries' draw
            r = range(s, s + len(vecs))
            blob = vecs.astype("<f4").tobytes()  # one conversion a chunk, then a slice a row
            row = vecs.shape[1] * 4
            with cat.transaction() as conn:
                conn.executemany(
                    "INSERT INTO files (id, path, root, size, mtime_ns, hash, modality, status, first_seen,"
                    " last_seen) VALUES (?, ?, '/synthetic', 1000, 0, ?, 'image', 'indexed', ?, ?)",
                    ((i + 1, f"/synthetic/img-{i:08d}.jpg", f"{i:032x}", seen, seen) for i in r),
                )
                conn.executemany(
                    "INSERT INTO segments (id, hash, space, model_id, kind, seq) VALUES (?, ?, 'clip', ?, 'image', 0)",
                    ((i + 1, f"{i:032x}", info.model_id) for i in r),
                )
                conn.executemany(
                    "INSERT INTO vectors (segment_id, space, model_id, dim, vector) VALUES (?, 'clip', ?, ?, ?)",
                    ((i + 1, info.model_id, info.dim, blob[(i - s) * row : (i - s + 1) * row]) for i in r),
                )
                conn.executemany(
                    "INSERT INTO encodings (hash, space, model_id, n_segments, created) VALUES (?, 'clip', ?, 1, ?)",
                    ((f"{i:032x}", info.model_id, seen) for i in r),
                )
        cat.conn.execute("PRAGMA synchronous = NORMAL")
        cat.conn.execute("PRAGMA journal_mode = WAL")
        rows_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        BinaryStore(paths.ann_dir(index_dir), cat, "clip", info.model_id, info.dim).checkpoint()
        build_s = time.perf_counter() - t0
        prepare_state(cat, index_dir)
    del enc
    release()
    return info.model_id, rows_s, build_s


def timed_search(text: str, env: dict[str, str]) -> tuple[float, float, float]:
    """Wall, CPU (user + system) seconds and peak RSS (MB) of one `xmr search` process.

    On a shared machine the CPU seconds move less with the load than the wall time."""
    code = (
        "import resource, subprocess, sys, time; t = time.perf_counter();"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE);"
        "w = time.perf_counter() - t; u = resource.getrusage(resource.RUSAGE_CHILDREN);"
        "sys.stderr.write(r.stderr.decode()[-3000:]) if r.returncode else None;"
        "print(w, u.ru_utime + u.ru_stime, u.ru_maxrss / 1024, r.returncode)"
    )
    r = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "xmr", "search", text, "-k", "10"],
                       env=env, capture_output=True, text=True)
    wall, cpu, rss, rc = r.stdout.split()
    if int(rc):
        raise SystemExit(f"xmr search failed ({rc}): {r.stderr}")
    return float(wall), float(cpu), float(rss)


def recall_at_size(index_dir: Path, args: argparse.Namespace) -> None:
    """recall@10 of the codes on the built index against an exact scan of its float32 file."""
    from xmr import paths
    from xmr.catalogue import Catalogue
    from xmr.store.binary import BinaryStore

    q = realistic(args.size_queries, draw=1)
    with Catalogue.open(index_dir, readonly=True) as cat:
        model_id = cat.active_model("clip")
        ann = paths.ann_dir(index_dir)
        exact = BinaryStore(ann, cat, "clip", model_id, DIM, readonly=True, mapped=True, scan_below=10**12)
        t0 = time.perf_counter()
        truth, _ = exact.search(q, K)  # every row scanned: exact
        print(f"| oversample | rescored (k=10) | recall@{K} | search p50 ms | load |  (exact scan of "
              f"{len(q)} queries together: {time.perf_counter() - t0:.0f}s)")
        print("|---|---|---|---|---|")
        for over in [int(x) for x in args.size_oversample.split(",")]:
            reader = BinaryStore(ann, cat, "clip", model_id, DIM, readonly=True, mapped=True, oversample=over)
            reader.search(q[:1], K)
            times, hits = [], 0
            for i in range(len(q)):
                t1 = time.perf_counter()
                found, _ = reader.search(q[i : i + 1], K)
                times.append(time.perf_counter() - t1)
                hits += len(np.intersect1d(found[0], truth[i]))
            reader.close()
            print(f"| {over} | {over * K} | {hits / (K * len(q)):.4f} | {1000 * statistics.median(times):.0f} | "
                  f"{load()} |", flush=True)


def part_processes(args: argparse.Namespace, work: Path) -> None:
    from encoders import captions
    from serve import Served, make_models

    n = args.process_n
    env = {**os.environ, **make_models(work)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    index_dir = work / f"index-{n}"
    print(f"\n== 2. whole processes at {n:,} vectors; load {load()}", flush=True)
    if not (index_dir / "built").exists():
        shutil.rmtree(index_dir, ignore_errors=True)
        model_id, rows_s, build_s = build_index(index_dir, n, env)
        (index_dir / "built").write_text(f"{rows_s:.0f} {build_s:.0f}")
        r = subprocess.run([sys.executable, "-m", "xmr", "models", "prepare"], env={**env, "XMR_HOME": str(index_dir)},
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"xmr models prepare failed: {r.stderr}")
    rows_s, build_s = (index_dir / "built").read_text().split()
    if args.build_only:
        print(f"# built: rows {rows_s}s, checkpoint {build_s}s; load {load()}")
        return
    sizes = {p.suffix: p.stat().st_size for p in (index_dir / "ann").iterdir() if p.suffix in (".f32", ".codes")}
    print(f"# catalogue rows in {rows_s}s, binary checkpoint in {build_s}s; catalogue "
          f"{(index_dir / 'catalogue.db').stat().st_size / 2**30:.1f} GiB, float32 file "
          f"{sizes.get('.f32', 0) / 2**30:.1f} GiB, codes {sizes.get('.codes', 0) / 2**20:.0f} MiB", flush=True)
    if args.size_recall in ("yes", "only"):
        recall_at_size(index_dir, args)
    if args.size_recall == "only":
        return
    e = {**env, "XMR_HOME": str(index_dir)}
    codes = next((index_dir / "ann").glob("*.codes"))
    texts = [f"{c} #{i}" for i, c in enumerate(captions(args.runs * 2 + 2, seed=5 + 1000 * args.text_seed))]
    timed_search("warm up the page cache for the interpreter and the query tower", e)  # not counted
    print("| search | cold s (median) | min | CPU s (median) | runs | peak RSS MB | load |")
    print("|---|---|---|---|---|---|---|")
    for label in ("codes", "exact float32 scan (codes moved away)"):
        if label != "codes":
            codes.rename(codes.with_suffix(".away"))
        walls, cpus, rss = [], [], []
        try:
            for i in range(args.runs):
                for p in (index_dir / "cache").glob("queries.db*"):
                    p.unlink(missing_ok=True)
                w, c, m = timed_search(texts[i + (0 if label == "codes" else args.runs)], e)
                walls.append(w)
                cpus.append(c)
                rss.append(m)
        finally:
            if label != "codes":
                codes.with_suffix(".away").rename(codes)
        print(f"| {label} | {statistics.median(walls):.2f} | {min(walls):.2f} | {statistics.median(cpus):.2f} | "
              f"{args.runs} | {statistics.median(rss):.0f} | {load()} |", flush=True)
    server = Served(index_dir, e)
    try:
        server.search({"q": "warm up", "k": 10})
        walls, inner = [], []
        for i, c in enumerate(captions(args.serve_queries, seed=7 + 1000 * args.text_seed)):
            dt, doc = server.search({"q": f"{c} / {i}", "k": 10})
            walls.append(dt)
            inner.append(float(doc["elapsed_s"]))
        texts = [f"{c} / {i}" for i, c in enumerate(captions(args.serve_queries, seed=7 + 1000 * args.text_seed))]
        again = [server.search({"q": t, "k": 10})[0] for t in texts]
        print(f"# xmr serve, POST /api/search k=10, {len(walls)} distinct texts: p50 {1000 * np.median(walls):.0f} ms "
              f"(p95 {1000 * np.percentile(walls, 95):.0f}; its elapsed_s p50 {1000 * np.median(inner):.0f}); "
              f"the same texts again (embedding cached) p50 "
              f"{1000 * np.median(again):.0f} ms; server RSS {server.rss_mb():.0f} MB; load {load()}", flush=True)
    finally:
        server.stop()


def kernel_name() -> str:
    from xmr.store import hamming_kernel

    if hamming_kernel.load() is not None:
        return "compiled (xmr.store.hamming_kernel)"
    return "numpy bitwise_count" if hasattr(np, "bitwise_count") else "numpy SWAR bit count"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recall-n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--oversample", default="1,2,5,10,20,50")
    ap.add_argument("--rotations", default="itq,random")
    ap.add_argument("--process-n", type=int, default=0, help="vectors of the whole-process part (0: skip it)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--serve-queries", type=int, default=50)
    # the same texts again find their neighbours' rows and catalogue pages in the page cache
    ap.add_argument("--text-seed", type=int, default=0, help="another set of query texts (fresh to a reused index)")
    ap.add_argument("--size-queries", type=int, default=50, help="queries of the recall at --process-n")
    ap.add_argument("--size-oversample", default="20,50,100,200")
    ap.add_argument("--size-recall", choices=("yes", "no", "only"), default="yes",
                    help="measure recall at --process-n (in process), and whether to stop after it")
    ap.add_argument("--build-only", action="store_true", help="build the --process-n index (once) and stop")
    ap.add_argument("--workdir", type=Path, default=None, help="kept between runs (the big index is built once)")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="xmr-codes-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# benchmarks/codes.py {' '.join(sys.argv[1:])}; {os.cpu_count()} cores; numpy {np.__version__}"
          f"; Hamming kernel: {kernel_name()}; load {load()}")
    if args.recall_n:
        part_recall(args, work)
    if args.process_n:
        part_processes(args, work)
    print(f"# load {load()} at end")


if __name__ == "__main__":
    main()
