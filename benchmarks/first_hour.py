"""A newcomer's first minute: ``xmr index fixtures/media`` then the first ``xmr search``.

Random-weight checkpoints of the default architectures (ViT-B-32, HTSAT-tiny +
RoBERTa) are passed as files; the models dir and the index dir start empty for
every round, so nothing exported or embedded by an earlier round helps. Both
commands are timed as whole processes (interpreter start, imports, model loads,
exports). The search is ``xmr search "dog barking"``, as the README suggests a
first query; whether its stderr carried a "preparing" line (towers exported in
the user's first search) is reported.

    python benchmarks/first_hour.py [--rounds 2] [--checkout PATH]

``--checkout`` runs another checkout's xmr (PYTHONPATH points there; the
fixtures indexed are that checkout's), to compare a base commit with this one.
The machine may be shared: the load average is printed with every run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _proc  # noqa: E402
from _models import REPO, clap_checkpoint, clip_checkpoint, xmr_env  # noqa: E402

QUERY = "dog barking"


def commit_of(checkout: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def one_round(checkout: Path, tmp: Path, n: int, clip: Path, clap: Path, tok: Path) -> tuple[float, float, bool]:
    work = tmp / f"round-{n}"
    env = xmr_env(dict(os.environ), work, tok)
    env["PYTHONPATH"] = str(checkout)
    env["XMR_HOME"] = str(work / "index")  # the index dir
    env["XMR_CLIP_MODEL"] = f"ViT-B-32:{clip}"
    env["XMR_CLAP_MODEL"] = str(clap)
    env["XMR_DEVICE"] = "cpu"
    env["COLUMNS"] = "140"
    xmr = [sys.executable, "-m", "xmr"]
    idx = _proc.run([*xmr, "index", "fixtures/media"], env=env, cwd=str(checkout))
    if idx.returncode not in (0, 1):  # 1: some fixtures are broken on purpose
        raise SystemExit(f"index failed ({idx.returncode}):\n{idx.stderr}")
    load_after_index = _proc.load_avg()
    search = _proc.run([*xmr, "search", QUERY], env=env, cwd=str(checkout))
    if search.returncode:
        raise SystemExit(f"search failed ({search.returncode}):\n{search.stderr}")
    preparing = [ln for ln in search.stderr.splitlines() if "preparing" in ln.lower()]
    print(
        f"  round {n + 1}: index {idx.wall_s:.1f} s (load {load_after_index}), "
        f"first search {search.wall_s:.1f} s (load {_proc.load_avg()}), "
        f"sum {idx.wall_s + search.wall_s:.1f} s; search printed a 'preparing' line: {'yes' if preparing else 'no'}",
        flush=True,
    )
    for line in preparing:
        print(f"    search stderr: {line.strip()}", flush=True)
    return idx.wall_s, search.wall_s, bool(preparing)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--checkout", type=Path, default=REPO, help="the xmr checkout to run (default: this one)")
    ap.add_argument("--ckpt-dir", type=Path, default=None, help="reuse random-weight checkpoints kept here")
    args = ap.parse_args()
    checkout = args.checkout.resolve()

    with tempfile.TemporaryDirectory(prefix="xmr-first-hour-") as tmp_name:
        tmp = Path(tmp_name)
        ckpt = args.ckpt_dir or tmp / "ckpt"
        clip = clip_checkpoint(ckpt)
        clap, tok = clap_checkpoint(ckpt)
        print(f"checkout {checkout} at {commit_of(checkout)}; {os.cpu_count()} cores, "
              f"load average {_proc.load_avg()} (a shared machine: other work runs beside this)", flush=True)
        sums = []
        for n in range(args.rounds):
            i, s, _ = one_round(checkout, tmp, n, clip, clap, tok)
            sums.append(i + s)
        print(f"index + first search: median {_proc.median(sums):.1f} s over {len(sums)} rounds", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
