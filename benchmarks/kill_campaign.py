"""Power loss at scale: SIGKILL `xmr index` at random moments and check what survives.

Generates a mixed tree of about 3,000 files (text, images, short audio) and runs
the real `xmr index` command on it with the deterministic test encoders
(tests/fake_encoders.py through XMR_BACKEND_CLIP / XMR_BACKEND_CLAP: the
pipeline, catalogue, ANN files and crash paths are all the product's; only the
networks are replaced, so a trial takes seconds instead of minutes).

Each trial changes the tree (a fresh index every ``--fresh-every`` trials, so
kills also land in a long first run), starts `xmr index`, SIGKILLs it after a
uniformly random delay up to the duration of an uninterrupted run of the same
kind, then checks:

* ``PRAGMA integrity_check`` is ok (else: a corrupt catalogue);
* every file that was committed before the kill keeps the same vectors (ids and
  bytes), both right after the kill and after the resuming run (else: lost items);
* `xmr search` works (exit 0; exit 4 "no index" only when nothing was committed);
* the resuming run exits 0 and the catalogue then holds exactly the tree, every
  file indexed (else: a tree mismatch).

It prints the trials, kills that landed while the run was working, corrupt
catalogues, lost committed items, search failures, tree mismatches and the mean
resume time (the resuming run's wall time, against an uninterrupted run).

    python benchmarks/kill_campaign.py --trials 100 [--files 3000] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from test_indexer import make_audio, make_image, make_text  # noqa: E402  (the tests' media generators)

Snapshot = dict[str, tuple[tuple[int, str], ...]]  # path -> ((vector id, digest of its bytes), ...)


def make_tree(root: Path, n_files: int, rng: random.Random) -> None:
    """About 60 % text, 30 % images, 10 % one-second audio, in 30 folders."""
    for i in range(n_files):
        d = root / f"d{i % 30:02d}"
        d.mkdir(parents=True, exist_ok=True)
        write_file(d, i, rng)


def write_file(d: Path, i: int, rng: random.Random) -> Path:
    kind = rng.random()
    seed = rng.randrange(1 << 30)
    if kind < 0.6:
        p = d / f"note-{i:05d}.txt"
        make_text(p, seed, words=rng.randrange(20, 120))
    elif kind < 0.9:
        p = d / f"img-{i:05d}.png"
        make_image(p, seed, size=24)
    else:
        p = d / f"tone-{i:05d}.wav"
        make_audio(p, seed % 40, seconds=1.0, sr=8000)
    return p


def mutate(root: Path, rng: random.Random, fraction: float, next_id: int) -> tuple[set[str], int]:
    """Rewrite, add, delete and move about ``fraction`` of the files; returns the paths touched."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    n = max(4, int(len(files) * fraction))
    chosen = rng.sample(files, min(n, len(files)))
    touched: set[str] = set()
    q = len(chosen) // 4
    for p in chosen[:q]:  # rewritten in place: new content, same name
        p.unlink()
        touched.add(str(p))
        new = write_file(p.parent, int(p.stem.split("-")[-1]), rng)
        if new != p:  # another kind of file now
            touched.add(str(new))
    for p in chosen[q : 2 * q]:  # deleted
        p.unlink()
        touched.add(str(p))
    for p in chosen[2 * q : 3 * q]:  # moved to another folder (keeps its vectors)
        dest = root / f"d{rng.randrange(30):02d}" / ("moved-" + p.name)
        if not dest.exists():
            p.rename(dest)
            touched.update({str(p), str(dest)})
    for _ in range(len(chosen) - 3 * q):  # new files
        touched.add(str(write_file(root / f"d{rng.randrange(30):02d}", next_id, rng)))
        next_id += 1
    return touched, next_id


def connect(db: Path) -> sqlite3.Connection | None:
    if not db.exists():
        return None
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def snapshot(db: Path) -> Snapshot:
    con = connect(db)
    if con is None:
        return {}
    try:
        try:
            rows = con.execute(
                "SELECT f.path, v.id, v.vector FROM files f JOIN segments s ON s.hash = f.hash"
                " JOIN vectors v ON v.segment_id = s.id WHERE f.status = 'indexed' ORDER BY f.path, v.id"
            ).fetchall()
        except sqlite3.OperationalError:  # killed before the first migration committed
            return {}
    finally:
        con.close()
    out: dict[str, list[tuple[int, str]]] = {}
    for path, vid, vec in rows:
        out.setdefault(path, []).append((vid, hashlib.blake2b(vec, digest_size=8).hexdigest()))
    return {p: tuple(v) for p, v in out.items()}


def integrity_ok(db: Path) -> bool:
    con = connect(db)
    if con is None:
        return True  # killed before the catalogue existed: nothing to be corrupt
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    except sqlite3.DatabaseError:
        return False
    finally:
        con.close()


def catalogue_matches_tree(db: Path, root: Path) -> bool:
    con = connect(db)
    if con is None:
        return False
    try:
        rows = con.execute("SELECT path, status FROM files").fetchall()
    finally:
        con.close()
    on_disk = {str(p) for p in root.rglob("*") if p.is_file()}
    return {p for p, _ in rows} == on_disk and {s for _, s in rows} == {"indexed"}


def lost(before: Snapshot, after: Snapshot, exclude: set[str]) -> list[str]:
    """Files committed in ``before`` (and not changed since) whose vectors differ or are gone in ``after``."""
    return [p for p, vecs in before.items() if p not in exclude and after.get(p) != vecs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh-every", type=int, default=5, help="every N-th trial starts from an empty index")
    ap.add_argument("--mutate", type=float, default=0.1, help="share of the tree changed before other trials")
    ap.add_argument("--workdir", type=Path, default=None, help="where the tree and index go (default: a temp dir)")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="xmr-kill-"))
    root, index = work / "tree", work / "index"
    db = index / "catalogue.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("XMR_")}
    env.update(
        XMR_HOME=str(index),
        XMR_OFFLINE="1",
        XMR_BACKEND_CLIP="fake_encoders:FakeClip",
        XMR_BACKEND_CLAP="fake_encoders:FakeClap",
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    cmd = [sys.executable, "-m", "xmr", "index", str(root), "--quiet"]
    search = [sys.executable, "-m", "xmr", "search", "document alpha", "-k", "5", "--paths"]

    t0 = time.perf_counter()
    make_tree(root, args.files, rng)
    n_tree = sum(1 for p in root.rglob("*") if p.is_file())
    print(f"tree: {n_tree} files in {time.perf_counter() - t0:.1f}s; index {index}", flush=True)

    def run_to_end() -> float:
        t = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(f"an uninterrupted run failed ({done.returncode}): {done.stderr.strip()}")
        return time.perf_counter() - t

    # baselines: how long an uninterrupted run of each kind takes (the kill window)
    full_s = run_to_end()
    next_id = args.files
    touched, next_id = mutate(root, rng, args.mutate, next_id)
    incr_s = run_to_end()
    print(f"uninterrupted run: full {full_s:.2f}s, incremental ({args.mutate:.0%} changed) {incr_s:.2f}s", flush=True)

    totals = dict(trials=0, landed=0, corrupt=0, lost=0, search_failures=0, mismatches=0)
    resume: dict[str, list[float]] = {"full": [], "incremental": []}
    kill_points: list[float] = []  # delay / window of the kills that landed
    for trial in range(args.trials):
        fresh = trial % args.fresh_every == 0
        if fresh:
            shutil.rmtree(index, ignore_errors=True)
            touched = set()
        else:
            touched, next_id = mutate(root, rng, args.mutate, next_id)
        before = snapshot(db)
        window = full_s if fresh else incr_s
        delay = rng.uniform(0.0, window)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        landed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        ok = integrity_ok(db)
        at_kill = snapshot(db)
        lost_now = lost(before, at_kill, touched) if ok else []
        res = subprocess.run(search, env=env, capture_output=True, text=True, timeout=600)
        # with nothing committed yet, "no index" (4) or "run xmr index once" (7) is the right answer
        search_ok = res.returncode == 0 or (res.returncode in (4, 7) and not at_kill)
        t = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        resume_s = time.perf_counter() - t
        final = snapshot(db)
        # a changed file the killed run had not reached yet is expected to change; one it had
        # committed must come through the resuming run untouched
        pending = {p for p in touched if at_kill.get(p) == before.get(p)}
        lost_later = lost(at_kill, final, pending) if ok else []
        matches = done.returncode == 0 and catalogue_matches_tree(db, root) and integrity_ok(db)

        totals["trials"] += 1
        totals["landed"] += landed
        totals["corrupt"] += not ok
        totals["lost"] += len(set(lost_now) | set(lost_later))
        totals["search_failures"] += not search_ok
        totals["mismatches"] += not matches
        resume["full" if fresh else "incremental"].append(resume_s)
        if landed:
            kill_points.append(delay / window)
        print(
            f"trial {trial + 1:3d} {'full' if fresh else 'incr'}: kill at {delay:5.2f}s"
            f"{'' if landed else ' (run had ended)'}, integrity {'ok' if ok else 'CORRUPT'},"
            f" lost {len(set(lost_now) | set(lost_later))}, search {'ok' if search_ok else f'FAILED {res.returncode}'},"
            f" resume {resume_s:.2f}s {'exact tree' if matches else 'TREE MISMATCH: ' + done.stderr.strip()[-200:]}",
            flush=True,
        )

    def mean(xs: list[float]) -> str:
        return f"{statistics.mean(xs):.2f}s" if xs else "-"

    thirds = [sum(1 for k in kill_points if lo <= k < lo + 1 / 3) for lo in (0, 1 / 3, 2 / 3)]
    print()
    n_full, n_incr = len(resume["full"]), len(resume["incremental"])
    print(f"trials: {totals['trials']} ({n_full} from an empty index, {n_incr} incremental)")
    print(
        f"kills that landed while the run was working: {totals['landed']}"
        f" (in the first / middle / last third of an uninterrupted run's time: {thirds[0]} / {thirds[1]} / {thirds[2]})"
    )
    print(f"corrupt catalogues: {totals['corrupt']}")
    print(f"lost committed items: {totals['lost']}")
    print(f"search failures after a kill: {totals['search_failures']}")
    print(f"final runs not reaching exactly the tree: {totals['mismatches']}")
    print(
        f"mean resume time: {mean(resume['full'] + resume['incremental'])}"
        f" (after a kill in a full run {mean(resume['full'])} vs {full_s:.2f}s uninterrupted;"
        f" incremental {mean(resume['incremental'])} vs {incr_s:.2f}s)"
    )
    print(f"wall time: {time.perf_counter() - t0:.0f}s")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    bad = totals["corrupt"] + totals["lost"] + totals["search_failures"] + totals["mismatches"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
