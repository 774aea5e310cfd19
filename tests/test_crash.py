"""SIGKILL during `xmr index`: the catalogue stays sound and the next run completes the tree."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from xmr import paths
from xmr.catalogue import Catalogue
from xmr.store.hnsw import EXACT_THRESHOLD

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()


def make_big_tree(root: Path, n_files: int) -> set[str]:
    rng = np.random.default_rng(0)
    out = set()
    for i in range(n_files):
        d = root / f"d{i % 25:02d}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"note-{i:05d}.txt"
        p.write_text(f"document {i} " + " ".join(rng.choice(WORDS, 30)) + "\n")
        out.add(str(p))
    return out


def _indexed_count(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM files WHERE status = 'indexed'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _snapshot(index_dir: Path) -> dict[str, list[int]]:
    """path -> its vector ids, for every file that is fully indexed."""
    with Catalogue.open(index_dir, readonly=True) as cat:
        rows = cat.conn.execute(
            "SELECT f.path, v.id FROM files f JOIN segments s ON s.hash = f.hash JOIN vectors v ON v.segment_id = s.id"
            " WHERE f.status = 'indexed' ORDER BY f.path, v.id"
        ).fetchall()
    out: dict[str, list[int]] = {}
    for path, vid in rows:
        out.setdefault(path, []).append(vid)
    return out


def _check_consistent(index_dir: Path) -> None:
    with Catalogue.open(index_dir, readonly=True) as cat:
        assert cat.integrity_check() == "ok"
        # every committed encoding has all its vectors; every indexed text file has both spaces
        bad = cat.conn.execute(
            "SELECT e.hash, e.space, e.n_segments, COUNT(v.id) FROM encodings e"
            " LEFT JOIN segments s ON s.hash = e.hash AND s.space = e.space AND s.model_id = e.model_id"
            " LEFT JOIN vectors v ON v.segment_id = s.id GROUP BY e.hash, e.space HAVING COUNT(v.id) != e.n_segments"
        ).fetchall()
        assert bad == []
        missing = cat.conn.execute(
            "SELECT f.path FROM files f WHERE f.status = 'indexed' AND f.modality = 'text'"
            " AND (SELECT COUNT(*) FROM encodings e WHERE e.hash = f.hash) != 2"
        ).fetchall()
        assert missing == []


@pytest.mark.parametrize("workers", ["0", "1"])
def test_sigkill_mid_run_then_resume(tmp_path: Path, fake_encoders: None, xmr_cmd: list[str], workers: str) -> None:
    root = tmp_path / "big"
    expected = make_big_tree(root, 1500)
    index_dir = paths.index_dir()
    db = paths.catalogue_path(index_dir)
    env = dict(os.environ, FAKE_ENCODER_DELAY="0.004")
    cmd = xmr_cmd + ["index", str(root), "--quiet", "--workers", workers]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if _indexed_count(db) >= 200:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    _check_consistent(index_dir)
    before = _snapshot(index_dir)
    assert 200 <= len(before) < len(expected), "killed partway"

    done = subprocess.run(cmd, env=dict(os.environ), capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    _check_consistent(index_dir)
    after = _snapshot(index_dir)
    with Catalogue.open(index_dir, readonly=True) as cat:
        paths_in_index = {r.path for r in cat.files_under(str(root)).values()}
        statuses = {s for (s,) in cat.conn.execute("SELECT DISTINCT status FROM files")}
        last = cat.last_run("index")
    assert paths_in_index == expected
    assert statuses == {"indexed"}
    # what was committed before the kill is intact and was not embedded again
    for path, ids in before.items():
        assert after[path] == ids
    assert last["counts"]["embedded_files"] == len(expected) - len(before)


# Runs `xmr index` in a child that SIGKILLs itself at a chosen point of saving the
# hnswlib file: just before the temp file replaces the old one (a half-written
# temp file is left behind), or right after the replace, before the state row
# that describes the new file is written.
_KILL_DURING_SAVE = """
import os, signal, sys
mode, args = sys.argv[1], sys.argv[2:]
real_replace = os.replace

def replace(src, dst, *a, **k):
    if str(src).endswith(".tmp") and "ann" in str(dst):
        if mode == "before-replace":
            with open(src, "r+b") as f:
                f.truncate(os.path.getsize(src) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *a, **k)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *a, **k)

os.replace = replace
from xmr.cli import main
main(args)
"""


@pytest.mark.parametrize("mode", ["before-replace", "after-replace"])
def test_sigkill_while_saving_the_vector_index(tmp_path: Path, fake_encoders: None, mode: str) -> None:
    import sys

    from xmr.indexer import IndexOptions, index
    from xmr.query import parse_query
    from xmr.search import SearchOptions, search

    root = tmp_path / "big"
    make_big_tree(root, EXACT_THRESHOLD + 300)  # above the exact-search threshold: an hnswlib file is kept
    index_dir = paths.index_dir()
    index([root], index_dir=index_dir, options=IndexOptions(workers=0))
    ann_dir = paths.ann_dir(index_dir)
    assert any(p.suffix != ".tmp" for p in ann_dir.iterdir())
    expected = make_big_tree(root / "more", 150) | {str(p) for p in root.rglob("*.txt")}

    child = subprocess.run(
        [sys.executable, "-c", _KILL_DURING_SAVE, mode, "index", str(root), "--quiet", "--workers", "0"],
        capture_output=True,
        timeout=600,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    _check_consistent(index_dir)

    def ranked(exact: bool) -> list[list[str]]:
        out = []
        for q in ("alpha bravo", "kilo lima", "document 2201"):
            res = search(parse_query(q), index_dir=index_dir, options=SearchOptions(k=10, exact=exact))
            out.append([r.path for r in res.results])
        return out

    # the stale or damaged file is detected: results agree with exhaustive search
    exact = ranked(True)
    approx = ranked(False)
    recall = sum(len(set(a) & set(e)) for a, e in zip(approx, exact, strict=True)) / sum(map(len, exact))
    assert recall >= 0.95
    # and everything committed before the kill is searchable
    with Catalogue.open(index_dir, readonly=True) as cat:
        committed = {r.path for r in cat.files_under(str(root)).values() if r.status == "indexed"}
    assert committed == expected  # the kill came after the last batch was committed

    done = subprocess.run(
        [sys.executable, "-m", "xmr", "index", str(root), "--quiet", "--workers", "0"], capture_output=True, timeout=600
    )
    assert done.returncode == 0, done.stderr.decode()
    _check_consistent(index_dir)
    assert [p.name for p in ann_dir.iterdir() if p.name.endswith(".tmp")] == []
    exact, approx = ranked(True), ranked(False)
    assert sum(len(set(a) & set(e)) for a, e in zip(approx, exact, strict=True)) / sum(map(len, exact)) >= 0.95


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_cleanly_and_the_next_run_resumes(tmp_path: Path, fake_encoders: None, xmr_cmd: list[str]) -> None:
    root = tmp_path / "big"
    expected = make_big_tree(root, 1500)
    index_dir = paths.index_dir()
    db = paths.catalogue_path(index_dir)
    # 20 ms a file: 30 s of work in all, so a poller starved for seconds on a loaded machine still
    # signals mid-run (at 4 ms the run could finish before a late poll, and exit 0); the resuming
    # run below has no delay
    env = dict(os.environ, FAKE_ENCODER_DELAY="0.02")
    cmd = xmr_cmd + ["index", str(root), "--workers", "1"]
    # Ctrl-C as a terminal sends it: a suite started in the background of a script inherits
    # SIGINT ignored, which Python (and so `xmr index`) then keeps ignoring
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and _indexed_count(db) < 200:
        time.sleep(0.02)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert err.decode().strip().splitlines()[-1].startswith("xmr: error: interrupted"), err.decode()
    assert "Traceback" not in err.decode() and out == b""
    _check_consistent(index_dir)
    with Catalogue.open(index_dir, readonly=True) as cat:
        assert cat.last_run("index")["status"] == "interrupted"
        done_before = {r.path for r in cat.files_under(str(root)).values() if r.status == "indexed"}
    assert 200 <= len(done_before) < len(expected)
    done = subprocess.run(cmd + ["--quiet"], capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    with Catalogue.open(index_dir, readonly=True) as cat:
        rows = cat.files_under(str(root)).values()
        assert {r.path for r in rows} == expected and {r.status for r in rows} == {"indexed"}
        assert cat.last_run("index")["counts"]["embedded_files"] == len(expected) - len(done_before)
