"""End-to-end cost of `xmr search` as a user runs it: a fresh process per query.

For each N it builds (once, cached under --workdir) an index whose models are
the real architectures with random weights (ViT-B-32, HTSAT-tiny) loaded from
checkpoint files: a real `xmr index` of three fixture files records the models,
`xmr models prepare` exports the query towers, then N synthetic unit vectors
are added under the real model ids in realistic shares, the ANN files are
checkpointed and the search state is prepared, as `xmr index` ends. Then it
times whole `xmr search` processes (interpreter start-up included) for a text,
an image and a 10 s audio query:

* cold: the first call after the index is built (the query cache, embeddings
  and answers, is emptied before every run; with --no-state the prepared search
  state too, as for an index written by an older xmr),
* repeated: the same query again (embedding and answers from the query cache),

with peak RSS from the child's rusage, medians of --runs. With --baseline the
same queries also run with XMR_QUERY_ENGINE=torch (the backends: torch and the
full models, as every search did before the query towers), in turns.

    python benchmarks/search_cli.py --sizes 10000,100000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from search import clustered  # noqa: E402  (benchmarks/search.py)

FIXTURES = REPO / "fixtures" / "media"
IMAGE = FIXTURES / "images" / "gradient.jpg"
AUDIO = FIXTURES / "audio" / "chord_c_major.wav"
# shares of the vectors per group, as a mixed personal collection yields them
SHARES = {("clip", "image"): 0.45, ("clip", "text_passage"): 0.15, ("clap", "audio_window"): 0.25,
          ("clap", "text_passage"): 0.15}
MODALITY = {"image": "image", "audio_window": "audio", "text_passage": "text"}


def models(workdir: Path) -> dict[str, str]:
    """Random-weight checkpoints and tokenizer (made once), as environment variables."""
    root = workdir / "models"
    root.mkdir(parents=True, exist_ok=True)
    clip_ckpt, clap_ckpt = root / "clip-vit-b-32.pt", root / "clap-htsat-tiny.pt"
    if not clip_ckpt.exists():
        import open_clip
        import torch

        torch.manual_seed(0)
        torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), clip_ckpt)
    if not clap_ckpt.exists():
        from clap_helpers import make_checkpoint

        make_checkpoint(clap_ckpt, seed=1)
    from _models import roberta_tokenizer

    tok = roberta_tokenizer(root / "roberta-words")
    return {
        "XMR_CLIP_MODEL": f"ViT-B-32:{clip_ckpt}",
        "XMR_CLAP_MODEL": str(clap_ckpt),
        "XMR_CLAP_TOKENIZER": str(tok),
        "XMR_MODELS_DIR": str(root / "xmr-models"),
        "XMR_DEVICE": "cpu",
        "XMR_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
    }


def xmr(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xmr", *args], env=env, capture_output=True, text=True, **kw)


def build_index(n: int, workdir: Path, env: dict[str, str]) -> Path:
    index = workdir / f"index-{n}"
    if (index / "built.json").exists():
        return index
    shutil.rmtree(index, ignore_errors=True)
    seed = workdir / "seed-media"
    seed.mkdir(parents=True, exist_ok=True)
    for src in (IMAGE, AUDIO, FIXTURES / "text" / "bread.md"):
        shutil.copy(src, seed / src.name)
    env = {**env, "XMR_HOME": str(index)}
    for cmd in (["index", str(seed), "--quiet"], ["models", "prepare"]):
        r = xmr(cmd, env)
        if r.returncode:
            raise SystemExit(f"xmr {' '.join(cmd)} failed: {r.stderr}")
    from xmr.catalogue import Catalogue, now_iso
    from xmr.search import prepare_state
    from xmr.store.hnsw import HnswStore

    with Catalogue.open(index) as cat:
        ids = {sp: cat.active_model(sp) for sp in ("clip", "clap")}
        with cat.transaction():
            made = 0
            for g, ((space, kind), share) in enumerate(SHARES.items()):
                count = int(round(n * share))
                vecs = clustered(count, seed=g, draw=1)
                per_file = {"image": 1, "audio_window": 6, "text_passage": 5}[kind]
                now = now_iso()
                for start in range(0, count, per_file):
                    h = f"synthetic-{space}-{kind}-{start}"
                    cat.conn.execute(
                        "INSERT INTO files (path, root, size, mtime_ns, hash, modality, status, first_seen, last_seen)"
                        " VALUES (?, ?, 1, 0, ?, ?, 'indexed', ?, ?)",
                        (f"/synthetic/{space}-{kind}/{start}", "/synthetic", h, MODALITY[kind], now, now),
                    )
                    block = vecs[start : start + per_file]
                    for seq, v in enumerate(block):
                        cur = cat.conn.execute(
                            "INSERT INTO segments (hash, space, model_id, kind, seq, start_s, end_s) VALUES"
                            " (?, ?, ?, ?, ?, ?, ?)",
                            (h, space, ids[space], kind, seq, *((seq * 10.0, seq * 10.0 + 10.0)
                                                              if kind == "audio_window" else (None, None))),
                        )
                        cat.conn.execute(
                            "INSERT INTO vectors (segment_id, space, model_id, dim, vector) VALUES (?, ?, ?, ?, ?)",
                            (cur.lastrowid, space, ids[space], 512, np.asarray(v, "<f4").tobytes()),
                        )
                    cat.conn.execute(
                        "INSERT INTO encodings (hash, space, model_id, n_segments, created) VALUES (?, ?, ?, ?, ?)",
                        (h, space, ids[space], len(block), now),
                    )
                made += count
        t0 = time.perf_counter()
        for space in ("clip", "clap"):
            HnswStore(index / "ann", cat, space, ids[space], 512).checkpoint()
        build_s = time.perf_counter() - t0
        prepare_state(cat, index)  # what `xmr index` does after its last commit
    (index / "built.json").write_text(json.dumps({"n": n, "ann_build_s": round(build_s, 1)}))
    return index


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and peak RSS of one process, measured by a tiny wrapper that reports the child's rusage."""
    code = (
        "import resource, subprocess, sys, time; t = time.perf_counter();"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE);"
        "w = time.perf_counter() - t;"
        "sys.stderr.write(r.stderr.decode()[-3000:]) if r.returncode else None;"
        "print(w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, r.returncode)"
    )
    r = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "xmr", "search", *args],
                       env=env, capture_output=True, text=True)
    wall, rss, rc = r.stdout.split()
    if int(rc):
        raise SystemExit(f"xmr search {' '.join(args)} failed ({rc}): {r.stderr}")
    return float(wall), float(rss)


QUERIES = {
    "text": ["dog barking", "-k", "10"],
    "image": ["--image", str(IMAGE), "-k", "10"],
    "audio (10 s)": ["--audio", str(AUDIO), "-k", "10"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated N (e.g. 10000,100000,1000000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/xmr-bench-search-cli"))
    ap.add_argument("--baseline", action="store_true", help="also time XMR_QUERY_ENGINE=torch (the backends)")
    ap.add_argument("--queries", default=",".join(QUERIES), help="which of: " + ", ".join(QUERIES))
    ap.add_argument("--no-state", action="store_true", help="cold runs without the prepared search state")
    args = ap.parse_args()
    # an installed xmr has its bytecode compiled; without this a developer shell's
    # PYTHONDONTWRITEBYTECODE=1 recompiles xmr in every timed process (about 0.07 s each)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    env = {**os.environ, **models(args.workdir)}
    print(f"# xmr search, whole processes, medians of {args.runs}; {os.cpu_count()} cores; load "
          f"{os.getloadavg()[0]:.1f} at start; cold = " + ("no cache, no prepared state" if args.no_state
          else "query cache emptied, search state as `xmr index` left it"))
    print("| N | query | engine | cold s | repeated s | peak RSS MB (cold) |")
    print("|---|---|---|---|---|---|")
    for n in [int(x) for x in args.sizes.split(",")]:
        index = build_index(n, args.workdir, env)
        if not args.no_state:  # an index built before prepare_state existed gets it now
            from xmr.catalogue import Catalogue
            from xmr.search import prepare_state

            with Catalogue.open(index) as cat:
                prepare_state(cat, index)
        e = {**env, "XMR_HOME": str(index)}
        engines = [("onnx", e)] + ([("torch", {**e, "XMR_QUERY_ENGINE": "torch"})] if args.baseline else [])
        for label in args.queries.split(","):
            q = QUERIES[label]
            results = {name: {"cold": [], "rss": [], "rep": []} for name, _ in engines}
            for _ in range(args.runs):
                for name, env_ in engines:  # in turns, so load drifts hit both alike
                    if args.no_state:
                        shutil.rmtree(index / "cache", ignore_errors=True)
                    else:
                        (index / "cache" / "queries.db").unlink(missing_ok=True)
                    wall, rss = timed(q, env_)
                    results[name]["cold"].append(wall)
                    results[name]["rss"].append(rss)
                    results[name]["rep"].append(timed(q, env_)[0])
            for name, _ in engines:
                r = results[name]
                print(f"| {n:,} | {label} | {name} | {statistics.median(r['cold']):.2f} | "
                      f"{statistics.median(r['rep']):.2f} | {statistics.median(r['rss']):.0f} |", flush=True)
    print(f"# load {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
