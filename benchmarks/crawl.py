"""No-op re-index time of a generated tree (target: <= 2 s for 10,000 files).

Builds a tree of N tiny mixed files (images, audio, text), indexes it once with
the deterministic test encoders (the first run's embedding cost is not what this
measures), then times re-indexing the unchanged tree:

* end to end: ``python -m xmr index TREE --quiet`` as a subprocess, interpreter
  start-up included, as a user would see it;
* in-process: ``xmr.indexer.index()``, the library call alone;
* the walk alone: ``xmr.crawl.walk()`` listing the tree (what tests/test_crawl.py
  checks by counting its system calls, this measures in seconds).

    python benchmarks/crawl.py [--files 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from fixtures.make_fixtures import make_tree

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        tree, index_dir = tmp_path / "tree", tmp_path / "index"
        env = dict(
            os.environ,
            XMR_HOME=str(index_dir),
            XMR_BACKEND_CLIP="fake_encoders:FakeClip",
            XMR_BACKEND_CLAP="fake_encoders:FakeClap",
            PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
        )
        os.environ.update({k: env[k] for k in ("XMR_HOME", "XMR_BACKEND_CLIP", "XMR_BACKEND_CLAP")})
        t0 = time.perf_counter()
        make_tree(tree, args.files, seed=1)
        print(f"generated {args.files} files in {time.perf_counter() - t0:.1f}s")

        cmd = [sys.executable, "-m", "xmr", "index", str(tree), "--quiet", "--json"]
        t0 = time.perf_counter()
        first = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if first.returncode != 0:
            print(first.stderr, file=sys.stderr)
            return 1
        print(f"first index (test encoders): {time.perf_counter() - t0:.1f}s")

        e2e = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            e2e.append(time.perf_counter() - t0)
            assert res.returncode == 0, res.stderr
            assert '"files_read": 0' in res.stdout, res.stdout

        from xmr.indexer import IndexOptions, index

        lib = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            report = index([tree], index_dir=index_dir, options=IndexOptions())
            lib.append(time.perf_counter() - t0)
            assert report.unchanged == args.files and report.files_read == 0

        from xmr.crawl import walk

        walks = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            n = sum(1 for _ in walk([tree]))
            walks.append(time.perf_counter() - t0)
            assert n == args.files, n

        print(f"no-op re-index of {args.files} files (median of {args.repeat}):")
        print(f"  end to end (python -m xmr index): {statistics.median(e2e):.3f}s  (min {min(e2e):.3f}s)")
        print(f"  library call xmr.indexer.index(): {statistics.median(lib):.3f}s  (min {min(lib):.3f}s)")
        print(f"  the walk alone, xmr.crawl.walk(): {statistics.median(walks):.3f}s  (min {min(walks):.3f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
