"""A full disk mid-run: the failed write rolls back, the run stops with its own exit code
and one line, nothing committed is lost, and the next run resumes.

The error is injected at the write calls: for the catalogue, SQLite itself hits its
page limit (``PRAGMA max_page_count``) and reports SQLITE_FULL exactly as on a full
disk; for the ANN file, ``fsync`` of the file being saved fails with ENOSPC, where
filesystems with delayed allocation report a full disk.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from cli_helpers import invoke
from test_crash import _check_consistent, _snapshot, make_big_tree

from xmr import paths
from xmr.catalogue import Catalogue
from xmr.errors import ExitCode
from xmr.store.hnsw import EXACT_THRESHOLD
from xmr.store.hnsw_file import file_checksum

pytestmark = pytest.mark.usefixtures("fake_encoders")


def _indexed(root: Path) -> set[str]:
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        return {r.path for r in cat.files_under(str(root)).values() if r.status == "indexed"}


def test_disk_full_during_a_batch_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "tree"
    first = make_big_tree(root / "a", 120)
    assert invoke("index", str(root), "--workers", "0").exit_code == 0
    committed = _snapshot(paths.index_dir())
    assert set(committed) == first
    more = make_big_tree(root / "b", 300)

    real_add = Catalogue.add_encoding
    calls = {"n": 0}

    def add_then_fill_the_disk(self: Catalogue, *a: object, **k: object) -> None:
        calls["n"] += 1
        if calls["n"] == 150:  # mid-run, after some batches of the second tree were committed
            pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
            self.conn.execute(f"PRAGMA max_page_count = {pages}")  # no room for one more page
        real_add(self, *a, **k)

    monkeypatch.setattr(Catalogue, "add_encoding", add_then_fill_the_disk)
    res = invoke("index", str(root), "--workers", "0")
    assert res.exit_code == ExitCode.NO_SPACE == 10, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xmr: error: ") and "Traceback" not in res.stderr
    assert "catalogue.db: disk full while committing" in lines[0] and "run the same command again" in lines[0]

    _check_consistent(paths.index_dir())  # integrity ok, no half-written encoding
    after = _snapshot(paths.index_dir())
    assert {p: after[p] for p in committed} == committed  # nothing committed before is lost
    partial = {p: v for p, v in after.items() if p in more}
    assert 0 < len(partial) < len(more)  # it stopped partway, keeping its earlier batches

    monkeypatch.setattr(Catalogue, "add_encoding", real_add)  # space freed
    res = invoke("index", str(root), "--workers", "0", "--json")
    assert res.exit_code == 0, res.stderr
    assert _indexed(root) == first | more
    final = _snapshot(paths.index_dir())
    assert {p: final[p] for p in committed | partial.keys()} == {**committed, **partial}  # resumed, not redone
    report = json.loads(res.stdout)  # only what was not committed is processed again
    assert report["embedded_files"] + report["duplicates"] == len(more) - len(partial)


def test_disk_full_while_saving_the_vector_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "tree"
    expected = make_big_tree(root, EXACT_THRESHOLD + 100)  # big enough for an ANN file
    ann = paths.ann_dir(paths.index_dir())
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target.startswith(str(ann)) and target.endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    res = invoke("index", str(root), "--workers", "0")
    assert res.exit_code == ExitCode.NO_SPACE, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "disk full while saving the vector index" in lines[0], res.stderr
    assert [p.name for p in ann.iterdir() if p.name.endswith(".tmp")] == []  # the partial file is gone
    _check_consistent(paths.index_dir())
    assert _indexed(root) == expected  # every batch was committed before the save failed
    res = invoke("search", "alpha bravo", "--paths")  # the catalogue answers without the ANN file
    assert res.exit_code == 0 and res.stdout.splitlines()

    monkeypatch.setattr(os, "fsync", real_fsync)
    res = invoke("index", str(root), "--workers", "0", "--json")
    assert res.exit_code == 0, res.stderr
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        states = [cat.get_ann_state(sp, cat.active_model(sp)) for sp in ("clip", "clap")]
    for state in states:  # the next run saved a complete, verified file
        assert state is not None and state["file"]
        assert file_checksum(ann / state["file"]) == state["checksum"]
