"""hnswlib against milvus-lite (HNSW) through xmr's vector store backends, side by side.

Synthetic vectors with realistic structure (``benchmarks/search.py`` ``clustered``:
clustered, anisotropic, low-rank plus noise, a shared direction). Each backend runs in
its own process (its peak RSS is that process tree's, the data it is fed included):

* ingest: ``checkpoint()`` from an in-memory catalogue (``MemoryVectorSource``) -
  hnswlib builds and saves its graph, Milvus receives upserts and builds its index;
* disk: what the backend keeps (the ANN directory / the milvus-lite database);
* cold: a fresh process opens the index read-only and answers one query (the
  ``xmr search`` case), wall time of the whole process minus a bare Python start;
* warm p50/p95: single queries (k=10) after a warm-up, in the ingesting process;
* recall@10 against exact search (numpy brute force).

    python benchmarks/scale.py --n 100000            # both backends, a table on stdout
    python benchmarks/scale.py --n 1000000 --queries 200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _proc import gib, load_avg, run  # noqa: E402
from search import clustered  # noqa: E402

SPACE, MODEL, DIM, K = "clip", "bench", 512, 10
BACKENDS = {
    "hnswlib": {},
    "milvus-lite HNSW": {"index_type": "HNSW", "M": 16, "ef_construction": 200, "ef_search": 200},
}


def _open(backend: str, work: Path, source, *, readonly: bool):  # noqa: ANN001, ANN202
    from xmr.store import open_index

    if backend == "hnswlib":
        return open_index("hnswlib", work / "ann", source, SPACE, MODEL, DIM, readonly=readonly, mapped=readonly)
    opts = dict(BACKENDS[backend], uri=f"milvus-lite:{work / 'milvus.db'}", namespace="bench")
    return open_index("milvus", work / "ann", source, SPACE, MODEL, DIM, readonly=readonly, **opts)


def _source(data: np.ndarray, work: Path):  # noqa: ANN202
    from xmr.store.memory import MemoryVectorSource

    src = MemoryVectorSource()
    src.add(SPACE, MODEL, data)
    state = work / "state.json"
    if state.exists():  # the cold reader sees the state row the ingest wrote
        src.put_ann_state(SPACE, MODEL, json.loads(state.read_text()))
    return src


def child_ingest(backend: str, work: Path, out: Path) -> None:
    data = np.load(work.parent / "data.npy", mmap_mode="r")
    queries = np.load(work.parent / "queries.npy")
    src = _source(np.asarray(data), work)
    store = _open(backend, work, src, readonly=False)
    t0 = time.perf_counter()
    state = store.checkpoint()
    ingest = time.perf_counter() - t0
    (work / "state.json").write_text(json.dumps(state))
    store.close()
    reader = _open(backend, work, src, readonly=False)
    reader.search(queries[:5], K)  # warm-up: loads graph / collection
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        ids, _ = reader.search(q[None, :], K)
        times.append(time.perf_counter() - t)
        found.append(ids[0])
    out.write_text(json.dumps({"ingest_s": ingest, "times": times, "found": [f.tolist() for f in found]}))


def child_cold(backend: str, work: Path, out: Path) -> None:
    t0 = time.perf_counter()
    data = np.load(work.parent / "data.npy", mmap_mode="r")
    q = np.load(work.parent / "queries.npy")[:1]
    src = _source(data, work)
    store = _open(backend, work, src, readonly=True)
    store.search(q, K)
    out.write_text(json.dumps({"cold_s": time.perf_counter() - t0, "fallback": store.fallback()}))


def _disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed)")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "BACKEND", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, backend, work = args.child
        (child_ingest if mode == "ingest" else child_cold)(backend, Path(work), Path(work) / f"{mode}.json")
        return
    root = Path(args.dir or tempfile.mkdtemp(prefix="xmr-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"# n={args.n} dim={DIM} queries={args.queries} load at start: {load_avg()}", flush=True)
    t = time.perf_counter()
    data = clustered(args.n, DIM, seed=0)
    queries = clustered(args.queries, DIM, seed=0, draw=1)
    np.save(root / "data.npy", data)
    np.save(root / "queries.npy", queries)
    truth = np.concatenate(
        [np.argsort(-(queries[s : s + 50] @ data.T), axis=1)[:, :K] for s in range(0, len(queries), 50)]
    )
    truth += 1  # the source's ids start at 1
    del data
    print(f"# data + exact answers: {time.perf_counter() - t:.1f} s", flush=True)
    bare = run([sys.executable, "-c", "pass"]).wall_s
    rows = []
    for i, backend in enumerate(args.backends.split(",")):
        work = root / f"b{i}"
        work.mkdir(exist_ok=True)
        me = [sys.executable, __file__, "--child"]
        ing = run([*me, "ingest", backend, str(work)], env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if ing.returncode:
            print(f"# {backend}: ingest failed: {ing.stderr[-2000:]}", flush=True)
            continue
        res = json.loads((work / "ingest.json").read_text())
        cold = run([*me, "cold", backend, str(work)])
        cold_res = json.loads((work / "cold.json").read_text()) if not cold.returncode else {}
        times = np.asarray(res["times"]) * 1000
        found = np.asarray(res["found"])
        recall = np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)])
        disk = _disk(work / "ann") + _disk(work / "milvus.db")
        rows.append(
            (
                backend,
                f"{res['ingest_s']:.1f} s",
                gib(ing.peak_rss),
                gib(disk),
                f"{cold.wall_s - bare:.2f} s" + (" (exact!)" if cold_res.get("fallback") else ""),
                f"{np.percentile(times, 50):.2f} ms",
                f"{np.percentile(times, 95):.2f} ms",
                f"{recall:.4f}",
            )
        )
        if cold_res.get("fallback"):
            print(f"# {backend}: the cold reader answered exactly: {cold_res['fallback']}", flush=True)
        print(f"# {backend} done, load {load_avg()}", flush=True)
    head = ("backend", "ingest", "peak RSS", "disk", "cold 1-shot", "warm p50", "warm p95", "recall@10")
    widths = [max(len(str(r[c])) for r in [head, *rows]) for c in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)))
    print(f"# load at end: {load_avg()}")
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
