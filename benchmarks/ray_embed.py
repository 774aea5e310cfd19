"""Embedding throughput: a local ``xmr index`` run against a 2-node local Ray cluster
(``xmr index --executor ray``), same images, same CPU-bound stand-in encoder
(``_burn_encoders.py``: the tests' fake encoders plus fixed matrix work per image).

Runs alternate (local, ray, local, ray, ...) so the machine's load hits both alike;
the cluster's start-up is outside the timed part, the driver's hashing and commits
are inside. Prints files/s per run and the ratio of the medians.

    python benchmarks/ray_embed.py --files 300 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PATHS = [str(HERE.parent), str(HERE), str(HERE.parent / "tests")]  # xmr, the burn and fake encoders
sys.path[:0] = PATHS
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only
os.environ["XMR_BACKEND_CLIP"] = "_burn_encoders:BurnClip"
os.environ["XMR_BACKEND_CLAP"] = "_burn_encoders:BurnClap"
os.environ["XMR_OFFLINE"] = "1"

import numpy as np  # noqa: E402
from _proc import load_avg  # noqa: E402
from PIL import Image  # noqa: E402


def make_images(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"{i:04d}.png")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    from xmr.index.options import IndexOptions
    from xmr.index.ray_embedder import RayEmbedder
    from xmr.indexer import index
    from xmr.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="xmr-ray-bench-"))
    os.environ["XMR_HOME"] = str(work / "home")
    make_images(work / "media", args.files)
    loopback = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
    # no autoscaler monitor or log monitor: fewer processes starting beside the raylet's agents
    head = {**loopback, "include_dashboard": False, "include_log_monitor": False, "no_monitor": True}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    cluster.add_node(**loopback)
    cluster.wait_for_nodes()
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(PATHS)}}
    options = IndexOptions(modalities=["image"])
    first = RayEmbedder(Settings.from_env(), options, address=cluster.address, runtime_env=env)
    actors = first.start()

    def ray_embedder() -> RayEmbedder:
        # one embedder per run (the driver records its models in each new catalogue); the
        # actors, and the models they loaded, are shared
        emb = RayEmbedder(Settings.from_env(), options, address=cluster.address, runtime_env=env)
        emb.actors = actors
        return emb

    # warm-up, not timed: imports, the actors' first model loads
    index([work / "media"], index_dir=work / "warm-local", options=options)
    index([work / "media"], index_dir=work / "warm-ray", options=options, embedder=ray_embedder())
    rates: dict[str, list[float]] = {"local": [], "ray": []}
    print(f"# {args.files} PNGs, burn rounds {os.environ.get('BURN_ROUNDS', '30')}, load {load_avg()}", flush=True)
    for r in range(args.rounds):
        for mode in ("local", "ray"):
            out = work / f"idx-{mode}-{r}"
            t = time.perf_counter()
            report = index(
                [work / "media"], index_dir=out, options=options, embedder=ray_embedder() if mode == "ray" else None
            )
            wall = time.perf_counter() - t
            assert report.embedded_files == args.files, report
            rates[mode].append(args.files / wall)
            print(
                f"{mode:5s} round {r}: {wall:6.2f} s, {args.files / wall:6.1f} files/s, load {load_avg()}", flush=True
            )
    local, remote = statistics.median(rates["local"]), statistics.median(rates["ray"])
    print(f"median: local {local:.1f} files/s, ray (2 nodes) {remote:.1f} files/s, ratio {remote / local:.2f}")
    # each ray run against the local run just before it: the load drifts less within a pair
    paired = [r / lo for r, lo in zip(rates["ray"], rates["local"], strict=True)]
    print(f"paired ratios: {' '.join(f'{x:.2f}' for x in paired)}, median {statistics.median(paired):.2f}")
    # what one actor call costs besides its work: an empty call's round trip, and the
    # pickled size of a chunk of 8 files' descriptions (what the driver sends per file)
    trips = []
    for _ in range(50):
        t = time.perf_counter()
        ray.get(actors[0].pid.remote())
        trips.append(time.perf_counter() - t)
    import pickle

    from xmr.index.decode import identify
    from xmr.index.items import _Item

    files = sorted((work / "media").iterdir())[:8]
    sample = [identify(_Item(str(f), str(f.parent), f.stat().st_size, 0, None, None, None, None)) for f in files]
    size = len(pickle.dumps([(p, None) for p in sample]))
    print(f"# an empty actor call: median {statistics.median(trips) * 1000:.2f} ms (50 calls), "
          f"8 files' descriptions: {size} bytes pickled, load {load_avg()}")
    first.close()
    ray.shutdown()
    cluster.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
