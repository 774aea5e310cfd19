"""Private modes: the index directory is 0700 and every file xmr writes there 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import invoke
from test_crash import make_big_tree

from xmr import paths
from xmr.store.hnsw import EXACT_THRESHOLD


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: modes must not depend on the user's umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def modes(index: Path) -> dict[str, int]:
    """Relative path -> permission bits, for the index directory and all below it."""
    out = {".": stat.S_IMODE(os.lstat(index).st_mode)}
    for top, dirs, files in os.walk(index):
        for name in dirs + files:
            p = Path(top, name)
            out[str(p.relative_to(index))] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def test_helpers_create_private_files_and_dirs(tmp_path: Path, open_umask: None) -> None:
    d = paths.make_private_dir(tmp_path / "a" / "b")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    os.close(paths.open_private(d / "lock"))
    paths.create_private_file(d / "db")
    paths.write_private_file(d / "sub" / "cache.bin", b"xyz")
    assert (d / "sub" / "cache.bin").read_bytes() == b"xyz"
    assert modes(d) == {".": 0o700, "lock": 0o600, "db": 0o600, "sub": 0o700, "sub/cache.bin": 0o600}


def test_tighten_removes_group_and_other_bits_once(tmp_path: Path) -> None:
    index = paths.make_private_dir(tmp_path / "idx")
    (index / "ann").mkdir()
    (index / "catalogue.db").write_bytes(b"")
    (index / "ann" / "x.hnsw").write_bytes(b"")
    (index / "readonly").write_bytes(b"")
    os.chmod(index, 0o755)
    os.chmod(index / "ann", 0o775)
    os.chmod(index / "catalogue.db", 0o644)
    os.chmod(index / "ann" / "x.hnsw", 0o666)
    os.chmod(index / "readonly", 0o444)
    outside = tmp_path / "not-ours.txt"  # a file outside the index, readable by all
    outside.write_bytes(b"")
    os.chmod(outside, 0o644)
    (index / "link").symlink_to(outside)
    notice = paths.tighten_index_modes(index)
    assert notice is not None and str(index) in notice and "5 " in notice
    found = modes(index)
    del found["link"]  # a link's own mode means nothing; its target is not ours and not followed
    assert found == {".": 0o700, "ann": 0o700, "catalogue.db": 0o600, "ann/x.hnsw": 0o600, "readonly": 0o400}
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644  # the target was left alone
    assert paths.tighten_index_modes(index) is None  # nothing left to do: no second notice


@pytest.mark.usefixtures("fake_encoders")
def test_fresh_index_is_private_after_index_and_search(tmp_path: Path, open_umask: None) -> None:
    root = tmp_path / "tree"
    make_big_tree(root, EXACT_THRESHOLD + 100)  # above the exact-search threshold: ANN files are kept
    index = paths.index_dir()
    res = invoke("index", str(root), "--workers", "0")
    assert res.exit_code == 0, res.stderr
    assert "private" not in res.stderr  # a fresh index needs no tightening notice
    res = invoke("search", "alpha bravo", "--json")
    assert res.exit_code == 0, res.stderr
    found = modes(index)
    # everything a run writes is there: catalogue with its WAL and shared memory, the
    # lock, the ANN files with their lock files, and the search's calibration cache
    names = set(found)
    assert {".", "catalogue.db", "catalogue.db-wal", "catalogue.db-shm", "index.lock", "ann", "cache"} <= names
    assert any(n.startswith("ann/") and n.endswith(".hnsw") for n in names)
    assert any(n.startswith("ann/") and n.endswith(".lock") for n in names)
    assert any(n.startswith("cache/calibration/bg-") for n in names)
    for name, mode in found.items():
        is_dir = (index / name).is_dir()
        assert mode == (0o700 if is_dir else 0o600), f"{name}: {oct(mode)}"


@pytest.mark.usefixtures("fake_encoders")
def test_loose_index_is_tightened_on_the_next_write_with_one_notice(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    make_big_tree(root, 20)
    index = paths.index_dir()
    assert invoke("index", str(root), "--workers", "0").exit_code == 0
    for name in modes(index):  # as an older xmr left it
        os.chmod(index / name, 0o755 if (index / name).is_dir() else 0o644)
    res = invoke("search", "alpha")  # reading is not writing: modes are left for the next write
    assert res.exit_code == 0 and "private" not in res.stderr
    res = invoke("index", str(root), "--workers", "0")
    assert res.exit_code == 0, res.stderr
    notices = [line for line in res.stderr.splitlines() if "made it private" in line]
    assert len(notices) == 1 and str(index) in notices[0]
    assert all(m & 0o077 == 0 for m in modes(index).values())
    again = invoke("index", str(root), "--workers", "0")
    assert again.exit_code == 0 and "private" not in again.stderr
    os.chmod(index / "catalogue.db", 0o640)  # `xmr remove` writes too
    res = invoke("remove", str(root / "d00"))
    assert res.exit_code == 0 and res.stderr.count("made it private") == 1
