"""xmr.crawl.walk: what is found, what is skipped, what is reported."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pytest

from fixtures.make_fixtures import make_tree
from xmr.crawl import FoundFile, WalkError, walk
from xmr.errors import ExitCode, PathNotFound, UsageError


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tree(root: Path, rels: Iterable[str]) -> Path:
    for rel in rels:
        if rel.endswith("/"):
            (root / rel).mkdir(parents=True, exist_ok=True)
        else:
            touch(root / rel, rel.encode())
    return root


def found(root: Path | Iterable[Path], **kw: object) -> list[str]:
    """Relative paths (to the first root) of the files found; fails on any WalkError."""
    roots = [root] if isinstance(root, Path) else list(root)
    out = []
    for item in walk(roots, **kw):  # type: ignore[arg-type]
        assert isinstance(item, FoundFile), item
        out.append(os.path.relpath(item.path, roots[0]).replace(os.sep, "/"))
    return out


def errors(root: Path, **kw: object) -> list[tuple[str, str]]:
    return [
        (os.path.relpath(e.path, root).replace(os.sep, "/"), e.reason)
        for e in walk([root], **kw)  # type: ignore[arg-type]
        if isinstance(e, WalkError)
    ]


# --- basics ------------------------------------------------------------------------------------


def test_found_file_fields(tmp_path: Path) -> None:
    p = touch(tmp_path / "root" / "a" / "b.txt", b"hello")
    (item,) = list(walk([tmp_path / "root"]))
    assert isinstance(item, FoundFile)
    st = os.stat(p)
    assert item == FoundFile(p, tmp_path / "root", 5, st.st_mtime_ns)
    assert item.path.is_absolute() and item.root.is_absolute()


def test_order_is_sorted_files_then_folders(tmp_path: Path) -> None:
    tree(tmp_path, ["b.txt", "a.txt", "z/1.txt", "m/2.txt", "m/a/3.txt", "c.txt"])
    assert found(tmp_path) == ["a.txt", "b.txt", "c.txt", "m/2.txt", "m/a/3.txt", "z/1.txt"]
    assert found(tmp_path) == found(tmp_path)


def test_relative_root_is_made_absolute_without_resolving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path / "real" / "f.txt")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    items = list(walk(["link"]))
    assert [i.path for i in items] == [tmp_path / "link" / "f.txt"]  # the symlinked root is kept as given
    assert items[0].root == tmp_path / "link"
    items = list(walk(["./real/../real"]))
    assert [str(i.path) for i in items] == [str(tmp_path / "real" / "f.txt")]


def test_single_file_root(tmp_path: Path) -> None:
    p = touch(tmp_path / "one.jpg", b"abc")
    (item,) = list(walk([p]))
    assert item == FoundFile(p, p, 3, os.stat(p).st_mtime_ns)
    hidden = touch(tmp_path / ".hidden.txt")
    assert [i.path for i in walk([hidden])] == [hidden]  # named explicitly: not skipped
    assert [i.path for i in walk(str(p))] == [p]  # a lone str is one root, not characters


def test_missing_root_raises_before_anything_is_walked(tmp_path: Path) -> None:
    touch(tmp_path / "ok" / "a.txt")
    with pytest.raises(PathNotFound) as err:
        walk([tmp_path / "ok", tmp_path / "missing"])  # raised by the call, not on iteration
    assert err.value.exit_code == ExitCode.NOT_FOUND
    assert err.value.path == str(tmp_path / "missing")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(PathNotFound):
        walk([tmp_path / "dangling"])


def test_empty_folder(tmp_path: Path) -> None:
    assert list(walk([tmp_path])) == []


def test_overlapping_roots_give_each_file_once(tmp_path: Path) -> None:
    tree(tmp_path, ["a.txt", "sub/b.txt", "sub/c.txt"])
    got = found([tmp_path, tmp_path / "sub", tmp_path / "sub" / "b.txt", tmp_path])
    assert sorted(got) == ["a.txt", "sub/b.txt", "sub/c.txt"]
    items = list(walk([tmp_path / "sub" / "b.txt", tmp_path]))
    assert sorted(os.path.relpath(i.path, tmp_path) for i in items) == ["a.txt", "sub/b.txt", "sub/c.txt"]


# --- hidden, excludes, .xmrignore --------------------------------------------------------------


def test_hidden_files_and_folders(tmp_path: Path) -> None:
    tree(tmp_path, ["a.txt", ".b.txt", ".git/config", "sub/.c.txt", "sub/d.txt", "sub/.cache/e.txt"])
    assert found(tmp_path) == ["a.txt", "sub/d.txt"]
    assert found(tmp_path, include_hidden=True) == [
        ".b.txt",
        "a.txt",
        ".git/config",
        "sub/.c.txt",
        "sub/d.txt",
        "sub/.cache/e.txt",
    ]
    # a hidden root given explicitly is walked
    assert found(tmp_path / "sub" / ".cache") == ["e.txt"]


def test_exclude_patterns(tmp_path: Path) -> None:
    tree(
        tmp_path,
        [
            "keep.txt",
            "junk.tmp",
            "deep/er/junk.tmp",
            "build/out.txt",
            "src/build/out.txt",
            "src/build.txt",
            "a/cache/x.txt",
            "a/b/cache/y.txt",
            "cache.txt",
            "top.txt",
            "sub/top.txt",
        ],
    )
    got = found(tmp_path, excludes=["*.tmp", "build/", "**/cache/**", "/top.txt"])
    assert got == ["cache.txt", "keep.txt", "src/build.txt", "sub/top.txt"]


def test_excluded_folder_is_not_entered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, ["a.txt", "node_modules/x/y.txt"])
    listed: list[str] = []
    real = os.scandir

    def spy(path: str):  # type: ignore[no-untyped-def]
        listed.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", spy)
    assert found(tmp_path, excludes=["node_modules/"]) == ["a.txt"]
    assert "node_modules" not in listed


def test_excludes_are_relative_to_each_root(tmp_path: Path) -> None:
    tree(tmp_path, ["r1/docs/a.md", "r1/b.md", "r2/docs/c.md", "r2/x/docs/d.md"])
    items = list(walk([tmp_path / "r1", tmp_path / "r2"], excludes=["/docs/"]))
    got = sorted(os.path.relpath(i.path, tmp_path) for i in items)
    assert got == ["r1/b.md", "r2/x/docs/d.md"]


def test_bad_exclude_pattern_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        walk([tmp_path], excludes=["!"])


def test_xmrignore_in_root(tmp_path: Path) -> None:
    tree(tmp_path, ["a.jpg", "b.jpg", "keep.jpg", "c.txt", "raw/x.txt", "sub/raw/y.txt", "sub/d.jpg"])
    (tmp_path / ".xmrignore").write_text("# comment\n*.jpg\n!keep.jpg\n/raw/\n")
    assert found(tmp_path) == ["c.txt", "keep.jpg", "sub/raw/y.txt"]
    # .xmrignore is read even though hidden files are not listed, and it is not listed itself
    assert ".xmrignore" in found(tmp_path, include_hidden=True)


def test_nested_xmrignore_patterns_are_relative_to_their_folder(tmp_path: Path) -> None:
    tree(
        tmp_path,
        [
            "only_here.txt",
            "sub/only_here.txt",
            "sub/deeper/only_here.txt",
            "sub/deeper/x.txt",
            "sub/x.txt",
            "x.txt",
            "sibling/secret.txt",
            "sub/secret.txt",
        ],
    )
    (tmp_path / "sub" / ".xmrignore").write_text("/only_here.txt\ndeeper/x.txt\nsecret.txt\n")
    assert found(tmp_path) == [
        "only_here.txt",
        "x.txt",
        "sibling/secret.txt",
        "sub/x.txt",
        "sub/deeper/only_here.txt",
    ]


def test_nested_xmrignore_files_combine_and_the_deeper_wins(tmp_path: Path) -> None:
    tree(tmp_path, ["a.log", "b.tmp", "sub/a.log", "sub/important.log", "sub/c.bak", "sub/deep/important.log"])
    (tmp_path / ".xmrignore").write_text("*.log\n*.tmp\n")
    (tmp_path / "sub" / ".xmrignore").write_text("*.bak\n!important.log\n")
    assert found(tmp_path) == ["sub/important.log", "sub/deep/important.log"]


def test_cli_excludes_win_over_xmrignore_negation(tmp_path: Path) -> None:
    tree(tmp_path, ["a.jpg", "keep.jpg", "b.txt"])
    (tmp_path / ".xmrignore").write_text("!keep.jpg\n")
    assert found(tmp_path, excludes=["*.jpg"]) == ["b.txt"]


def test_unreadable_xmrignore_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, ["a.txt"])
    ignore = tmp_path / ".xmrignore"
    ignore.write_text("a.txt\n")
    import builtins

    real_open = builtins.open

    def fake_open(file, *a, **k):  # type: ignore[no-untyped-def]
        if str(file) == str(ignore):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    items = list(walk([tmp_path]))
    assert WalkError(ignore, tmp_path, "cannot read ignore file: permission denied") in items
    assert any(isinstance(i, FoundFile) for i in items)  # the walk goes on


# --- symlinks ----------------------------------------------------------------------------------


def test_symlinks_are_not_followed_by_default(tmp_path: Path) -> None:
    outside = tree(tmp_path / "outside", ["o.txt", "d/p.txt"])
    root = tree(tmp_path / "root", ["a.txt"])
    (root / "file_link.txt").symlink_to(outside / "o.txt")
    (root / "dir_link").symlink_to(outside / "d")
    (root / "broken").symlink_to(tmp_path / "gone")
    assert list(walk([root])) == [FoundFile(root / "a.txt", root, 5, os.stat(root / "a.txt").st_mtime_ns)]


def test_symlinks_followed_with_the_flag(tmp_path: Path) -> None:
    outside = tree(tmp_path / "outside", ["o.txt", "d/p.txt"])
    root = tree(tmp_path / "root", ["a.txt"])
    (root / "file_link.txt").symlink_to(outside / "o.txt")
    (root / "dir_link").symlink_to(outside / "d")
    items = list(walk([root], follow_symlinks=True))
    paths = sorted(os.path.relpath(i.path, root) for i in items)
    assert paths == ["a.txt", "dir_link/p.txt", "file_link.txt"]
    link = next(i for i in items if i.path.name == "file_link.txt")
    assert isinstance(link, FoundFile) and link.size == len(b"o.txt")  # the target's size, path unresolved


def test_broken_symlink_is_an_error_only_when_following(tmp_path: Path) -> None:
    tree(tmp_path, ["a.txt"])
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    assert errors(tmp_path) == []
    assert errors(tmp_path, follow_symlinks=True) == [("broken.jpg", "broken symlink")]


def test_symlink_cycles_do_not_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tree(tmp_path / "root", ["a.txt", "sub/b.txt"])
    (root / "sub" / "up").symlink_to(root)  # cycle through the root
    (root / "sub" / "self").symlink_to(root / "sub")
    (root / "loop1").symlink_to(root / "loop2")  # symlink loop (ELOOP)
    (root / "loop2").symlink_to(root / "loop1")
    scanned = _count_scandir(monkeypatch)
    items = list(walk([root], follow_symlinks=True))
    # each real folder is listed once however many links lead to it: the walk cannot loop
    assert scanned == {os.path.realpath(root): 1, os.path.realpath(root / "sub"): 1}
    files = sorted(os.path.relpath(i.path, root) for i in items if isinstance(i, FoundFile))
    assert files == ["a.txt", "sub/b.txt"]
    errs = sorted((i.path.name, i.reason) for i in items if isinstance(i, WalkError))
    assert errs == [("loop1", "too many levels of symbolic links"), ("loop2", "too many levels of symbolic links")]


def test_folder_reached_twice_is_listed_once_under_its_real_path(tmp_path: Path) -> None:
    root = tree(tmp_path / "root", ["z_real/f.txt"])
    (root / "a_link").symlink_to(root / "z_real")  # sorts first, but the real path wins
    assert found(root, follow_symlinks=True) == ["z_real/f.txt"]


# --- unreadable entries ------------------------------------------------------------------------


def _deny(monkeypatch: pytest.MonkeyPatch, name: str, target: Path) -> None:
    """Make os.<name> raise PermissionError for ``target`` (chmod does not stop root)."""
    real = getattr(os, name)

    def fake(path, *a, **k):  # type: ignore[no-untyped-def]
        if os.fspath(path) == str(target):
            if name == "access":
                return False
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path, *a, **k)

    monkeypatch.setattr(os, name, fake)


def test_unreadable_folder_is_reported_and_the_walk_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, ["a.txt", "locked/secret.txt", "z/b.txt"])
    _deny(monkeypatch, "scandir", tmp_path / "locked")
    items = list(walk([tmp_path]))
    assert WalkError(tmp_path / "locked", tmp_path, "permission denied") in items
    assert sorted(os.path.relpath(i.path, tmp_path) for i in items if isinstance(i, FoundFile)) == [
        "a.txt",
        "z/b.txt",
    ]


def test_unreadable_file_is_reported_and_the_walk_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, ["a.txt", "locked.txt", "z.txt"])
    _deny(monkeypatch, "access", tmp_path / "locked.txt")
    items = list(walk([tmp_path]))
    assert items[1] == WalkError(tmp_path / "locked.txt", tmp_path, "permission denied")
    assert [i.path.name for i in items if isinstance(i, FoundFile)] == ["a.txt", "z.txt"]


def test_unreadable_root_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, ["r/a.txt"])
    _deny(monkeypatch, "scandir", tmp_path / "r")
    assert list(walk([tmp_path / "r"])) == [WalkError(tmp_path / "r", tmp_path / "r", "permission denied")]


_WALK_ERRORS = """
import json, os, sys
from xmr.crawl import WalkError, walk
root = sys.argv[1]
print(json.dumps({os.path.relpath(str(e.path), root): e.reason for e in walk([root]) if isinstance(e, WalkError)}))
"""


def test_real_permissions() -> None:
    """Real chmod, not a monkeypatch. Root reads mode-000 files, so as root the walk
    runs in a child process with the privileges of 'nobody'."""
    import json
    import shutil
    import subprocess
    import sys
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="xmr-perm-"))
    os.chmod(base, 0o755)  # the unprivileged child must reach it
    try:
        tree(base, ["a.txt", "locked/secret.txt", "nox/f.txt", "mode000.txt"])
        os.chmod(base / "locked", 0)
        os.chmod(base / "nox", 0o444)  # listable, but entries cannot be stat'ed
        os.chmod(base / "mode000.txt", 0)
        if os.geteuid() != 0:
            errs = {os.path.relpath(str(e.path), base): e.reason for e in walk([base]) if isinstance(e, WalkError)}
        else:
            setpriv = shutil.which("setpriv")
            assert setpriv, "util-linux setpriv is needed to drop root privileges for this test"
            repo = Path(__file__).resolve().parent.parent
            child = subprocess.run(
                [
                    setpriv,
                    "--reuid=nobody",
                    "--regid=nogroup",
                    "--clear-groups",
                    sys.executable,
                    "-c",
                    _WALK_ERRORS,
                    str(base),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "PYTHONPATH": str(repo)},
            )
            assert child.returncode == 0, child.stderr
            errs = json.loads(child.stdout)
    finally:
        os.chmod(base / "locked", 0o755)
        os.chmod(base / "nox", 0o755)
        shutil.rmtree(base)
    assert errs == {"locked": "permission denied", "nox/f.txt": "permission denied", "mode000.txt": "permission denied"}


# --- odd names and special files ---------------------------------------------------------------


def test_non_utf8_file_name(tmp_path: Path) -> None:
    raw_dir = os.fsencode(tmp_path) + b"/d\xff"
    os.mkdir(raw_dir)
    raw = raw_dir + b"/caf\xe9.txt"
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"bonjour")
    os.close(fd)
    (item,) = list(walk([tmp_path]))
    assert isinstance(item, FoundFile)
    assert os.fsencode(item.path) == raw  # surrogateescape round trip
    assert item.size == 7
    assert item.path.read_bytes() == b"bonjour"
    # ignore patterns see the decoded name too
    assert list(walk([tmp_path], excludes=["*.txt"])) == []


def test_unicode_names(tmp_path: Path) -> None:
    names = ["café.txt", "日本語.md", "emoji 🎵.wav", "Ωmega/ñ.jpg", "spaces and (parens).txt"]
    tree(tmp_path, names)
    assert sorted(found(tmp_path)) == sorted(names)
    (tmp_path / ".xmrignore").write_text("日本語.md\n", encoding="utf-8")
    assert "日本語.md" not in found(tmp_path)


def test_fifo_and_socket_are_skipped(tmp_path: Path) -> None:
    import socket

    tree(tmp_path, ["a.txt"])
    os.mkfifo(tmp_path / "pipe.wav")
    sock_dir = Path("/tmp") / f"xmr-sock-{os.getpid()}"  # AF_UNIX paths are limited to ~100 bytes
    sock_dir.mkdir(exist_ok=True)
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(sock_dir / "s.txt"))
        (tmp_path / "sock_link").symlink_to(sock_dir)
        assert found(tmp_path) == ["a.txt"]  # would hang opening the FIFO if it were listed
        assert found(tmp_path, follow_symlinks=True) == ["a.txt"]
        assert found(sock_dir) == []
    finally:
        s.close()
        for p in sock_dir.iterdir():
            p.unlink()
        sock_dir.rmdir()


def test_special_file_as_root(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    assert list(walk([tmp_path / "pipe"])) == [
        WalkError(tmp_path / "pipe", tmp_path / "pipe", "not a regular file or folder")
    ]


# --- cost ------------------------------------------------------------------------------------
# How long a walk takes is measured by benchmarks/crawl.py; here, the work it does per file.


def _count_scandir(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count os.scandir calls per real folder."""
    counts: dict[str, int] = {}
    real_scandir = os.scandir

    def spy(path: str) -> object:
        key = os.path.realpath(path)
        counts[key] = counts.get(key, 0) + 1
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", spy)
    return counts


def test_walk_lists_each_folder_once_and_opens_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import xmr.crawl

    make_tree(tmp_path / "t", 3000, seed=3)
    (tmp_path / "t" / ".xmrignore").write_text("*.tmp\n")
    folders = {os.path.realpath(d) for d, _, _ in os.walk(tmp_path / "t")}
    scanned = _count_scandir(monkeypatch)
    opened: list[str] = []

    def open_spy(path: str, *args: object, **kwargs: object) -> object:
        opened.append(os.path.basename(path))
        return open(path, *args, **kwargs)  # noqa: SIM115 - handed back to the caller's `with`

    monkeypatch.setattr(xmr.crawl, "open", open_spy, raising=False)
    stats: list[str] = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: stats.append(os.fspath(p)) or real_stat(p, *a, **k))
    items = list(walk([tmp_path / "t"], excludes=["cache/"]))
    assert len(items) == 3000 and all(isinstance(i, FoundFile) for i in items)
    assert len(folders) == 34 and scanned == dict.fromkeys(folders, 1)  # one listing per folder
    assert opened == [".xmrignore"]  # files are listed, never read: sizes come from the listing
    assert stats == [str(tmp_path / "t")]  # the root alone: entries are stat'ed through their DirEntry
def test_make_tree_makes_distinct_valid_files(tmp_path: Path) -> None:
    from xmr.sniff import classify_path

    paths = make_tree(tmp_path, 30, seed=1)
    assert len(paths) == 30 and len({p.read_bytes() for p in paths}) == 30
    kinds = [classify_path(p).modality for p in paths]
    assert kinds.count("image") == kinds.count("audio") == kinds.count("text") == 10
    assert make_tree(tmp_path / "again", 30, seed=1)[5].read_bytes() == paths[5].read_bytes()
