"""Start-up time of the light commands, against the interpreter's own start-up.

`xmr --help` and `xmr status` must stay quick: they import the CLI only (the
tests check that nothing of the engine is imported). Measured as wall time of
fresh processes, median of ``--runs`` runs after one warm-up, and quoted as a
ratio to ``python -c pass`` measured in the same run, so figures from machines
of different speed compare.

    python benchmarks/startup.py [--runs 15]
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


def median_wall(cmd: list[str], runs: int, env: dict[str, str]) -> float:
    subprocess.run(cmd, capture_output=True, env=env, check=True)  # warm the disk cache
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("XMR_")}
        env.update(XMR_HOME=home, PYTHONPATH=str(REPO))
        py = sys.executable
        base = median_wall([py, "-c", "pass"], args.runs, env)
        print(f"python -c pass: {base * 1000:.0f} ms (median of {args.runs})")
        for label, cmd in [
            ("xmr --help", [py, "-m", "xmr", "--help"]),
            ("xmr index --help", [py, "-m", "xmr", "index", "--help"]),
            ("xmr status (no index)", [py, "-m", "xmr", "status"]),
        ]:
            t = median_wall(cmd, args.runs, env)
            print(f"{label}: {t * 1000:.0f} ms = {t / base:.1f}x the interpreter's start-up")


if __name__ == "__main__":
    main()
