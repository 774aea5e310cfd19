"""``xmr serve``: a fresh ``xmr search`` process against a running server, and POST /api/search at scale.

    python benchmarks/serve.py [--runs 15] [--cold-runs 5] [--vectors 100000] [--queries 200]

Both parts use the default architectures with random weights (OpenCLIP
ViT-B-32; LAION-CLAP HTS-AT tiny + RoBERTa-base with a synthetic tokenizer),
loaded from checkpoint files the way a user passes them, so model loading and
text encoding cost what they cost with real weights. Nothing touches the
network; everything lives in a temporary directory.

1. **CLI end to end.** The fixture media (``fixtures/media``) indexed into a
   fresh index; ``xmr serve`` started on it and warmed with one query. Then,
   in turns, fresh processes: ``xmr --version`` (the floor: interpreter + CLI
   start), ``xmr search Q --paths`` (answered by the server) and, as the
   baseline, ``xmr search Q --paths --no-server`` (in process: opens the index
   and loads both text towers). Wall time of the whole process, medians.
2. **POST /api/search at N synthetic vectors.** A catalogue holding N
   clustered 512-d vectors (``benchmarks/search.py``'s generator) as image
   segments of the CLIP model, with its HNSW checkpoint; ``xmr serve`` on it.
   One client on a keep-alive connection sends ``--queries`` distinct text
   queries (k=10), each embedded by the CLIP text tower and searched: p50/p95
   of the request, and of the server's own ``elapsed_s``. Baseline in the
   same run: the library call ``xmr.search.search`` without warm state (what
   every ``xmr search`` process pays to open the index), with the encoder
   already loaded. Then the same queries again: their embeddings come from the
   query cache, so that is the served search without the text encoder.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO / "tests", REPO, REPO / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from encoders import captions, load_avg  # noqa: E402
from search import clustered  # noqa: E402

XMR = [sys.executable, "-m", "xmr"]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def make_models(tmp: Path) -> dict[str, str]:
    """Random-weight checkpoints of the default architectures; the env that selects them."""
    import logging

    import open_clip
    import torch
    from _models import roberta_tokenizer
    from clap_helpers import make_checkpoint

    torch.manual_seed(0)
    logging.disable(logging.WARNING)
    try:
        model = open_clip.create_model("ViT-B-32", pretrained=None)
    finally:
        logging.disable(logging.NOTSET)
    clip = tmp / "models" / "clip.pt"
    clip.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), clip)
    del model
    clap = tmp / "models" / "clap-htsat-tiny.pt"
    make_checkpoint(clap, amodel="HTSAT-tiny", seed=0)
    return {
        "XMR_CLIP_MODEL": f"ViT-B-32:{clip}",
        "XMR_CLAP_MODEL": str(clap),
        "XMR_CLAP_TOKENIZER": str(roberta_tokenizer(tmp / "roberta")),
        "XMR_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "XMR_DEVICE": "cpu",
        "XMR_MODELS_DIR": str(tmp / "xmr-models"),  # the exported query towers stay in the temporary dir
    }


class Served:
    """``xmr serve --port 0`` on an index, until stop()."""

    def __init__(self, index_dir: Path, env: dict[str, str]):
        from xmr.server.address import read_address

        self.proc = subprocess.Popen(
            XMR + ["serve", "--port", "0", "--index", str(index_dir), "--quiet"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        addr = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            addr = read_address(index_dir)
            if addr is not None and addr.pid == self.proc.pid:
                break
            time.sleep(0.05)
        if addr is None or addr.pid != self.proc.pid:
            raise SystemExit(f"xmr serve did not start: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
        host, port = addr.url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port, self.token = host, int(port), addr.token
        while time.monotonic() < deadline:
            try:
                if self.call("GET", "/api/ping")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
        try:
            return self._send(conn, method, path, body)
        finally:
            conn.close()

    def _send(self, conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()

    def search(self, payload: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        t0 = time.perf_counter()
        status, data = self._send(self.conn, "POST", "/api/search", json.dumps(payload).encode())
        dt = time.perf_counter() - t0
        if status != 200:
            raise SystemExit(f"search failed: {status} {data[:300]!r}")
        return dt, json.loads(data)

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.conn.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def timed_run(cmd: list[str], env: dict[str, str]) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, timeout=600)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {res.stderr.decode()}")
    return dt, res.stdout


def bench_cli(args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> None:
    from xmr.indexer import IndexOptions, index
    from xmr.settings import Settings

    print("\n== 1. a fresh `xmr search` process, with and without a running server", flush=True)
    media = tmp / "media"
    shutil.copytree(REPO / "fixtures" / "media", media)
    index_dir = tmp / "index-media"
    os.environ.update(env)
    t0 = time.perf_counter()
    # the bridge vocabulary is not embedded: text queries reach both spaces directly
    report = index([str(media)], index_dir=index_dir, settings=Settings.from_env(),
                   options=IndexOptions(workers=0, bridge_concepts=False))
    print(f"  indexed {report.embedded_files} files of fixtures/media in {time.perf_counter() - t0:.1f}s "
          f"({os.environ.get('XMR_BACKEND_CLIP') or 'random-weight ViT-B-32 + HTS-AT tiny/RoBERTa-base'})")
    from xmr.encoders import release

    release()
    run_env = dict(env, XMR_HOME=str(index_dir))
    server = Served(index_dir, run_env)
    try:
        t0 = time.perf_counter()
        server.search({"q": "warm up", "k": 10})
        print(f"  server warm-up query (loads both text towers): {time.perf_counter() - t0:.1f}s; "
              f"server RSS {server.rss_mb():.0f} MB")
        queries = [f"{c} {i}" for i, c in enumerate(captions(args.runs * 2 + 10, seed=1))]
        floor, via_server, in_process = [], [], []
        outputs_agree = True
        print(f"  load average before: {load_avg()}", flush=True)
        for i in range(args.runs):
            q = queries[i]
            floor.append(timed_run(XMR + ["--version"], run_env)[0])
            dt, out_server = timed_run(XMR + ["search", q, "--paths"], run_env)
            via_server.append(dt)
            if i < args.cold_runs:
                dt, out_local = timed_run(XMR + ["search", q, "--paths", "--no-server"], run_env)
                in_process.append(dt)
                outputs_agree &= out_local == out_server
        print(f"  load average after: {load_avg()}")
        med_s, med_l, med_f = statistics.median(via_server), statistics.median(in_process), statistics.median(floor)
        print(f"  `xmr --version` (start-up floor)       median {ms(med_f)}  [{args.runs} runs]")
        print(f"  `xmr search Q --paths` via the server  median {ms(med_s)}  p90 {ms(pct(via_server, 90))}  "
              f"min {ms(min(via_server))}  [{args.runs} runs]")
        print(f"  `xmr search Q --paths --no-server`     median {ms(med_l)}  min {ms(min(in_process))}  "
              f"[{len(in_process)} runs]")
        print(f"  in process / via server: {med_l / med_s:.1f}x; via server - floor: {ms(med_s - med_f)}; "
              f"same output both ways: {outputs_agree}")
        print(f"  target <= 300 ms median: {'met' if med_s <= 0.3 else 'NOT met'}")
    finally:
        server.stop()


def build_synthetic_index(index_dir: Path, n: int) -> tuple[str, float]:
    """A catalogue of n clustered 512-d vectors as image segments of the configured CLIP model, checkpointed."""
    from xmr import paths
    from xmr.catalogue import Catalogue, now_iso
    from xmr.encoders import load_encoder, release
    from xmr.settings import Settings
    from xmr.store.hnsw import HnswStore

    settings = Settings.from_env()
    enc = load_encoder("clip", settings)
    info = enc.info
    vecs = clustered(n, info.dim, seed=0)
    seen = now_iso()
    with Catalogue.open(index_dir, create=True) as cat:
        # bulk rows, as the indexer's upsert_file + add_encoding would write them one file at a time
        with cat.transaction() as conn:
            cat.ensure_model(info, settings.clip_model)
            cat.set_setting("active_model.clip", info.model_id)
            conn.executemany(
                "INSERT INTO files (id, path, root, size, mtime_ns, hash, modality, status, first_seen, last_seen)"
                " VALUES (?, ?, '/synthetic', 1000, 0, ?, 'image', 'indexed', ?, ?)",
                ((i + 1, f"/synthetic/img-{i:07d}.jpg", f"{i:032x}", seen, seen) for i in range(n)),
            )
            conn.executemany(
                "INSERT INTO segments (id, hash, space, model_id, kind, seq) VALUES (?, ?, 'clip', ?, 'image', 0)",
                ((i + 1, f"{i:032x}", info.model_id) for i in range(n)),
            )
            conn.executemany(
                "INSERT INTO vectors (segment_id, space, model_id, dim, vector) VALUES (?, 'clip', ?, ?, ?)",
                ((i + 1, info.model_id, info.dim, vecs[i].astype("<f4").tobytes()) for i in range(n)),
            )
            conn.executemany(
                "INSERT INTO encodings (hash, space, model_id, n_segments, created) VALUES (?, 'clip', ?, 1, ?)",
                ((f"{i:032x}", info.model_id, seen) for i in range(n)),
            )
        t0 = time.perf_counter()
        HnswStore(paths.ann_dir(index_dir), cat, "clip", info.model_id, info.dim).checkpoint()
        build_s = time.perf_counter() - t0
    del enc
    release()
    return info.model_id, build_s


def bench_api(args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> None:
    from xmr.query import QueryPart
    from xmr.search import SearchOptions, search
    from xmr.settings import Settings

    n = args.vectors
    print(f"\n== 2. POST /api/search at {n:,} synthetic vectors", flush=True)
    index_dir = tmp / "index-synthetic"
    os.environ.update(env)
    t0 = time.perf_counter()
    model_id, build_s = build_synthetic_index(index_dir, n)
    print(f"  catalogue of {n:,} clustered 512-d vectors ({model_id}) in {time.perf_counter() - t0:.0f}s, "
          f"HNSW checkpoint {build_s:.0f}s")
    run_env = dict(env, XMR_HOME=str(index_dir))
    server = Served(index_dir, run_env)
    try:
        t0 = time.perf_counter()
        server.search({"q": "warm up", "k": 10})
        print(f"  server warm-up query (opens the ANN, loads the CLIP text tower): {time.perf_counter() - t0:.1f}s")
        texts = [f"{c} #{i}" for i, c in enumerate(captions(args.queries, seed=2))]  # all distinct
        wall, inner = [], []
        print(f"  load average before: {load_avg()}", flush=True)
        for q in texts:
            dt, doc = server.search({"q": q, "k": 10})
            assert len(doc["results"]) == 10
            wall.append(dt)
            inner.append(float(doc["elapsed_s"]))
        print(f"  load average after: {load_avg()}")
        print(f"  POST /api/search, k=10, {len(wall)} distinct text queries, one keep-alive client:")
        print(f"    request  p50 {ms(pct(wall, 50))}  p95 {ms(pct(wall, 95))}  max {ms(max(wall))}")
        print(f"    server elapsed_s (embed + search)  p50 {ms(pct(inner, 50))}  p95 {ms(pct(inner, 95))}")
        # the same queries again: their embeddings come from the query cache, so this is the search
        # itself (ANN, calibration, catalogue, HTTP) without the text encoder
        again = [server.search({"q": q, "k": 10})[0] for q in texts]
        print(f"    the same {len(again)} queries repeated (embedding cached, no encoder): "
              f"p50 {ms(pct(again, 50))}  p95 {ms(pct(again, 95))}")
        print(f"    server RSS {server.rss_mb():.0f} MB")
        print(f"  target <= 50 ms p50: {'met' if pct(wall, 50) <= 0.05 else 'NOT met'}")
    finally:
        server.stop()
    settings = Settings.from_env()
    # baseline: the library without warm state (catalogue and ANN opened per call), encoder already loaded
    cold = []
    search([QueryPart("text", "warm the encoder")], index_dir=index_dir, settings=settings)
    # texts the server never saw: reusing `texts` would hit the query and answer caches
    for q in [f"baseline {c} #{i}" for i, c in enumerate(captions(args.cold_runs, seed=3))]:
        t0 = time.perf_counter()
        search([QueryPart("text", q)], index_dir=index_dir, settings=settings, options=SearchOptions(k=10))
        cold.append(time.perf_counter() - t0)
    print(f"  baseline: library search() without warm state, encoder loaded: median {ms(statistics.median(cold))} "
          f"[{len(cold)} runs] = {statistics.median(cold) / pct(wall, 50):.1f}x the served p50")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15, help="fresh `xmr search` processes via the server")
    ap.add_argument("--cold-runs", type=int, default=5, help="in-process baseline runs (each loads the models)")
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--only", choices=["cli", "api"])
    ap.add_argument(
        "--encoders",
        choices=["random", "fake"],
        default="random",
        help="fake: part 1 with the deterministic test encoders (no model cost: the client/server path alone)",
    )
    args = ap.parse_args()
    # an installed xmr has its bytecode compiled; without this a developer shell's
    # PYTHONDONTWRITEBYTECODE=1 recompiles xmr in every timed process (about 0.07 s each)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    print(f"xmr serve benchmark: {platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}, "
          f"load average {load_avg()}")
    with tempfile.TemporaryDirectory(prefix="xmr-bench-serve-") as tmp_s:
        tmp = Path(tmp_s)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
        if args.encoders == "fake":
            if args.only != "cli":
                raise SystemExit("--encoders fake is for part 1 only (--only cli): the test encoders are 32-d")
            env.update(XMR_BACKEND_CLIP="fake_encoders:FakeClip", XMR_BACKEND_CLAP="fake_encoders:FakeClap",
                       XMR_OFFLINE="1")
        else:
            env.update(make_models(tmp))
            env.pop("XMR_BACKEND_CLIP", None)
            env.pop("XMR_BACKEND_CLAP", None)
        print(f"encoders: {args.encoders}")
        if args.only in (None, "cli"):
            bench_cli(args, tmp, env)
        if args.only in (None, "api"):
            bench_api(args, tmp, env)


if __name__ == "__main__":
    main()
