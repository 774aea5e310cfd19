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
