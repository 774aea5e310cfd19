"""hnswlib against Milvus (milvus-lite in-process, and milvus-lite as a server) through
xmr's vector store backends, side by side in one run.

Synthetic vectors with realistic structure (``benchmarks/search.py`` ``clustered`` with
``anisotropic=True``): a low-rank (64-d) cluster model plus isotropic noise, 256 clusters
of uneven size, each stretched along its own axes, and a shared direction. Each step runs
in its own process; peak RSS is the largest resident size of that process tree (the data
it is fed included: the in-memory catalogue holds every vector, 2 GiB at 1M x 512):

* ingest: ``checkpoint()`` from an in-memory catalogue (``MemoryVectorSource``) -
  hnswlib builds and saves its graph, Milvus receives upserts, flushes and builds its
  index;
* disk: what the backend keeps (the ANN directory / the milvus-lite data directory);
* cold: a fresh process opens the index read-only and answers one query (the
  ``xmr search`` case: hnswlib scans its memory-mapped file exactly rather than load the
  graph; Milvus loads the collection), wall time of the whole process minus a bare
  Python start;
* warm p50/p95: single queries (k=10) after a warm-up, in another process that keeps the
  index open (the ``xmr serve`` case: hnswlib's graph loaded) (``--timed``
  queries, or fewer when they exceed ``--warm-budget`` seconds; at least 10);
* recall@10 against exact search (numpy brute force), over all ``--queries``, asked as
  one batch.

The server row runs ``milvus-lite server --host 127.0.0.1`` on a free port (checked to
listen on loopback only) over the data directory the in-process row built, unless
``--server-ingest`` makes it ingest its own copy through ``milvus://``; its peak RSS is
the server's plus the client's.

    python benchmarks/scale.py --n 100000            # all rows, a table on stdout
    nice python benchmarks/scale.py --n 1000000 --queries 200 | tee benchmarks/results/scale.txt
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _proc import _tree_rss, gib, load_avg, run  # noqa: E402
from search import clustered  # noqa: E402

SPACE, MODEL, DIM, K = "clip", "bench", 512, 10
HNSW = {"index_type": "HNSW", "M": 16, "ef_construction": 200, "ef_search": 200}  # as xmr's hnswlib
LITE, SERVER = "milvus-lite HNSW", "milvus-lite server HNSW"
ROWS = ("hnswlib", LITE, SERVER)


def _open(backend: str, work: Path, source, *, readonly: bool, uri: str = "", mapped: bool = False):  # noqa: ANN001, ANN202
    from xmr.store import open_index

    if backend == "hnswlib":  # mapped: scans the file exactly (xmr search's one query), no graph
        return open_index("hnswlib", work / "ann", source, SPACE, MODEL, DIM, readonly=readonly, mapped=mapped)
    uri = uri or f"milvus-lite:{work / 'milvus.db'}"
    opts = dict(HNSW, uri=uri, namespace="bench")
    return open_index("milvus", work / "ann", source, SPACE, MODEL, DIM, readonly=readonly, **opts)


def _source(data: np.ndarray, work: Path):  # noqa: ANN202
    from xmr.store.memory import MemoryVectorSource

    src = MemoryVectorSource()
    src.add(SPACE, MODEL, data)
    state = work / "state.json"
    if state.exists():  # readers see the state row the ingest wrote
        src.put_ann_state(SPACE, MODEL, json.loads(state.read_text()))
    return src


def _close() -> None:
    from xmr.store.milvus import close_clients

    close_clients()


def child_ingest(backend: str, work: Path, uri: str, opts: dict) -> dict:
    src = _source(np.load(work.parent / "data.npy"), work)
    store = _open(backend, work, src, readonly=False, uri=uri)
    t0 = time.perf_counter()
    state = store.checkpoint()
    ingest = time.perf_counter() - t0
    (work / "state.json").write_text(json.dumps(state))
    store.close()
    _close()
    return {"ingest_s": ingest}


def child_query(backend: str, work: Path, uri: str, opts: dict) -> dict:
    queries = np.load(work.parent / "queries.npy")
    src = _source(np.load(work.parent / "data.npy", mmap_mode="r"), work)
    reader = _open(backend, work, src, readonly=True, uri=uri)  # as `xmr serve` keeps it open
    reader.search(queries[:2], K)  # warm-up: loads graph / collection
    times, start = [], time.perf_counter()
    for q in queries[: opts["timed"]]:
        t = time.perf_counter()
        reader.search(q[None, :], K)
        times.append(time.perf_counter() - t)
        if len(times) >= 10 and time.perf_counter() - start > opts["warm_budget"]:
            break
    ids, _ = reader.search(queries, K)
    out = {"times": times, "found": ids.tolist(), "fallback": reader.fallback()}
    _close()
    return out


def child_cold(backend: str, work: Path, uri: str, opts: dict) -> dict:
    t0 = time.perf_counter()
    q = np.load(work.parent / "queries.npy")[:1]
    src = _source(np.load(work.parent / "data.npy", mmap_mode="r"), work)
    store = _open(backend, work, src, readonly=True, uri=uri, mapped=True)  # as `xmr search` opens it
    store.search(q, K)
    out = {"cold_s": time.perf_counter() - t0, "fallback": store.fallback()}
    _close()
    return out


CHILDREN = {"ingest": child_ingest, "query": child_query, "cold": child_cold}


def _disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


_LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def listeners(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                found.append(addr)
    return found


def loopback_only(port: int) -> bool:
    """Something listens on ``port``, on 127.0.0.1 / ::1 only (gRPC's dual-stack socket
    shows 127.0.0.1 as ::ffff:127.0.0.1 in /proc/net/tcp6)."""
    found = listeners(port)
    return bool(found) and all(a in _LOOPBACK for a in found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``milvus-lite server`` on 127.0.0.1 in a subprocess, with its peak RSS sampled."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        exe = Path(sys.executable).with_name("milvus-lite")
        cmd = [str(exe), "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(self.port)]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while not listeners(self.port):
            if self.proc.poll() is not None or time.perf_counter() - t0 > 120:
                raise RuntimeError(f"milvus-lite server did not start: {self.proc.stderr.read()[-2000:]}")
            time.sleep(0.05)
        self.start_s = time.perf_counter() - t0
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss(self.proc.pid))
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self.proc.send_signal(signal.SIGINT)  # it drains and closes its database on SIGINT
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _child(mode: str, backend: str, work: Path, uri: str, opts: dict):  # noqa: ANN202
    cmd = [sys.executable, __file__, "--child", mode, backend, str(work), uri or "-", json.dumps(opts)]
    res = run(cmd, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if res.returncode:
        raise RuntimeError(f"{mode} failed: {res.stderr[-2000:]}")
    return res, json.loads((work / f"{mode}.json").read_text())


def bench_row(backend: str, work: Path, truth: np.ndarray, bare: float, opts: dict, lite_work: Path | None) -> tuple:
    server, notes, uri = None, [], ""
    if backend == SERVER:
        data_dir = work / "milvus.db"
        if lite_work is not None and not opts["server_ingest"]:
            data_dir = lite_work / "milvus.db"  # the data the in-process row built: same engine, same files
            shutil.copy(lite_work / "state.json", work / "state.json")
            notes.append("ingest: reuses the in-process row's data directory")
        server = Server(data_dir)
        notes.append(f"server up in {server.start_s:.1f} s on 127.0.0.1:{server.port}, loopback only: "
                     f"{loopback_only(server.port)}")
        uri = f"milvus://127.0.0.1:{server.port}"
    try:
        ingest_s, peak = "-", 0
        if not (work / "state.json").exists():
            ing, res = _child("ingest", backend, work, uri, opts)
            ingest_s, peak = f"{res['ingest_s']:.1f} s", ing.peak_rss
        cold, cold_res = _child("cold", backend, work, uri, opts)
        qry, q_res = _child("query", backend, work, uri, opts)
        peak = max(peak, cold.peak_rss, qry.peak_rss)
        if server is not None:
            peak += server.peak
            disk = _disk(work / "milvus.db") or _disk(lite_work / "milvus.db" if lite_work else work)
        else:
            disk = _disk(work / "ann") + _disk(work / "milvus.db")
    finally:
        if server is not None:
            server.stop()
    times = np.asarray(q_res["times"]) * 1000
    found = np.asarray(q_res["found"])
    recall = np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)])
    for what, res in (("cold", cold_res), ("query", q_res)):
        if res.get("fallback"):
            notes.append(f"the {what} reader answered exactly: {res['fallback']}")
    cold_s = cold.wall_s - bare
    row = (
        backend,
        ingest_s,
        gib(peak),
        gib(disk),
        f"{cold_s:.2f} s" + (" (exact!)" if cold_res.get("fallback") else ""),
        f"{np.percentile(times, 50):.2f} ms",
        f"{np.percentile(times, 95):.2f} ms",
        str(len(times)),
        f"{recall:.4f}",
    )
    return row, notes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200, help="recall@10 over these, asked as one batch")
    ap.add_argument("--timed", type=int, default=100, help="single queries timed warm (at most)")
    ap.add_argument("--warm-budget", type=float, default=120.0, help="seconds of timed queries per row (>= 10 queries)")
    ap.add_argument("--backends", default=",".join(ROWS))
    ap.add_argument("--server-ingest", action="store_true", help="the server row ingests its own copy")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed)")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, backend, work, uri, opts = args.child
        out = CHILDREN[mode](backend, Path(work), "" if uri == "-" else uri, json.loads(opts))
        (Path(work) / f"{mode}.json").write_text(json.dumps(out))
        return
    opts = {"timed": args.timed, "warm_budget": args.warm_budget, "server_ingest": args.server_ingest}
    root = Path(args.dir or tempfile.mkdtemp(prefix="xmr-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"# n={args.n} dim={DIM} queries={args.queries} load at start: {load_avg()}", flush=True)
    t = time.perf_counter()
    data = clustered(args.n, DIM, seed=0, anisotropic=True)
    queries = clustered(args.queries, DIM, seed=0, draw=1, anisotropic=True)
    np.save(root / "data.npy", data)
    np.save(root / "queries.npy", queries)
    truth = []
    for s in range(0, len(queries), 20):
        sims = queries[s : s + 20] @ data.T
        part = np.argpartition(-sims, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
        truth.append(np.take_along_axis(part, order, axis=1))
    truth = np.concatenate(truth) + 1  # the source's ids start at 1
    del data
    print(f"# data + exact answers: {time.perf_counter() - t:.1f} s", flush=True)
    bare = run([sys.executable, "-c", "pass"]).wall_s
    rows, lite_work = [], None
    for i, backend in enumerate(args.backends.split(",")):
        work = root / f"b{i}"
        work.mkdir(exist_ok=True)
        t = time.perf_counter()
        try:
            row, notes = bench_row(backend, work, truth, bare, opts, lite_work)
        except Exception as err:  # noqa: BLE001 - report the row as failed, go on with the others
            print(f"# {backend}: FAILED: {err}", flush=True)
            continue
        if backend == LITE:
            lite_work = work
        rows.append(row)
        for note in notes:
            print(f"# {backend}: {note}", flush=True)
        print(f"# {backend} done in {time.perf_counter() - t:.0f} s, load {load_avg()}", flush=True)
        print("#   " + "  ".join(row), flush=True)
    head = ("backend", "ingest", "peak RSS", "disk", "cold 1-shot", "warm p50", "warm p95", "timed", "recall@10")
    widths = [max(len(str(r[c])) for r in [head, *rows]) for c in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    print(f"# load at end: {load_avg()}")
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
