"""Walk the folders to index: which files exist, with the size and mtime to tell
whether they changed. Nothing here opens a file except ``.xmrignore``.

Rules
-----
* Hidden entries (name starting with ".") are skipped unless ``include_hidden``;
  a root given explicitly is walked even when hidden.
* ``excludes`` are gitignore-style patterns relative to each root. A file or
  folder they match is excluded whatever any ``.xmrignore`` says.
* A ``.xmrignore`` (gitignore syntax) in any folder applies to that folder's
  subtree, with patterns relative to that folder; a deeper file's patterns win
  over a shallower one's, and ``!pattern`` re-includes. As in git, nothing
  inside an excluded folder can be re-included (the folder is not entered).
* Symlinks are skipped unless ``follow_symlinks``. Every directory is entered
  at most once (keyed by ``(st_dev, st_ino)``), so symlink cycles and bind
  mounts cannot loop, and a folder reachable by a symlink and by its real path
  is listed once, under its real path when both lie inside the walk.
* Problems with one entry (permission denied, a broken symlink being followed,
  an unreadable folder) are yielded as :class:`WalkError` and the walk goes on.
  FIFOs, sockets and devices are skipped silently.
* Order is deterministic: per folder, entries sorted by name, files first.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pathspec import GitIgnoreSpec

from xmr.errors import PathNotFound, UsageError

IGNORE_FILE = ".xmrignore"


@dataclass(frozen=True)
class FoundFile:
    path: Path  # absolute (os.path.abspath), symlinks not resolved
    root: Path  # the root it was found under, same normalisation
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class WalkError:
    path: Path
    root: Path
    reason: str


# (prefix relative to the root, with trailing "/"; spec) for each .xmrignore above a folder
_Chain = tuple[tuple[str, GitIgnoreSpec], ...]


@dataclass
class _Dir:
    path: str  # absolute
    rel: str  # relative to the root, "" or ending in "/"
    chain: _Chain
    key: tuple[int, int] | None  # (st_dev, st_ino), None when unknown


def walk(
    roots: Sequence[str | Path],
    *,
    include_hidden: bool = False,
    excludes: Sequence[str] = (),
    follow_symlinks: bool = False,
) -> Iterator[FoundFile | WalkError]:
    """Yield every indexable file under ``roots`` (folders or single files).

    Raises :class:`~xmr.errors.PathNotFound` at once, before anything is
    yielded, if a root does not exist.
    """
    if isinstance(roots, (str, Path)):  # a lone path would otherwise walk its characters
        roots = [roots]
    checked: list[tuple[str, os.stat_result | OSError]] = []
    for root in roots:
        ap = os.path.abspath(os.fspath(root))
        try:
            checked.append((ap, os.stat(ap)))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound("no such file or directory", path=root) from None
        except OSError as e:  # e.g. a parent folder we may not search: report, go on
            checked.append((ap, e))
    try:
        cli = GitIgnoreSpec.from_lines(excludes) if excludes else None
    except ValueError as e:  # pathspec's GitWildMatchPatternError
        raise UsageError(f"bad --exclude pattern: {e}") from None
    return _walk(checked, include_hidden, cli, follow_symlinks)


def _walk(
    roots: list[tuple[str, os.stat_result | OSError]],
    include_hidden: bool,
    cli: GitIgnoreSpec | None,
    follow_symlinks: bool,
) -> Iterator[FoundFile | WalkError]:
    visited: set[tuple[int, int]] = set()
    # Only a file root can be reached twice by path (folders are deduplicated by inode).
    seen_files: set[str] | None = set() if len(roots) > 1 else None
    for ap, st in roots:
        rootp = Path(ap)
        if isinstance(st, OSError):
            yield WalkError(rootp, rootp, _reason(st))
        elif stat.S_ISDIR(st.st_mode):
            top = _Dir(ap, "", (), (st.st_dev, st.st_ino))
            yield from _walk_dir(top, rootp, visited, seen_files, include_hidden, cli, follow_symlinks)
        elif stat.S_ISREG(st.st_mode):
            if seen_files is not None:
                if ap in seen_files:
                    continue
                seen_files.add(ap)
            if os.access(ap, os.R_OK):
                yield FoundFile(rootp, rootp, st.st_size, st.st_mtime_ns)
            else:
                yield WalkError(rootp, rootp, "permission denied")
        else:
            yield WalkError(rootp, rootp, "not a regular file or folder")


def _walk_dir(
    top: _Dir,
    rootp: Path,
    visited: set[tuple[int, int]],
    seen_files: set[str] | None,
    include_hidden: bool,
    cli: GitIgnoreSpec | None,
    follow_symlinks: bool,
) -> Iterator[FoundFile | WalkError]:
    stack = [top]
    # Folders reached through a symlink wait until the real tree is done, so that a
    # folder seen both ways is listed under its real path.
    deferred: list[_Dir] = []
    while stack or deferred:
        d = stack.pop() if stack else deferred.pop(0)
        if d.key is not None:
            if d.key in visited:
                continue
            visited.add(d.key)
        try:
            with os.scandir(d.path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            yield WalkError(Path(d.path), rootp, _reason(e))
            continue

        chain = d.chain
        for entry in entries:
            if entry.name == IGNORE_FILE:
                spec, err = _read_ignore(entry.path)
                if err is not None:
                    yield WalkError(Path(entry.path), rootp, err)
                elif spec is not None:
                    chain = (*chain, (d.rel, spec))
                break
        filtering = cli is not None or bool(chain)

        subdirs: list[_Dir] = []
        for entry in entries:
            name = entry.name
            if not include_hidden and name.startswith("."):
                continue
            try:
                link = entry.is_symlink()
                if link:
                    if not follow_symlinks:
                        continue
                    try:
                        st = entry.stat(follow_symlinks=True)
                    except FileNotFoundError:
                        yield WalkError(Path(entry.path), rootp, "broken symlink")
                        continue
                    is_dir, is_file = stat.S_ISDIR(st.st_mode), stat.S_ISREG(st.st_mode)
                else:
                    st = None
                    is_dir = entry.is_dir(follow_symlinks=False)  # d_type: no syscall
                    is_file = not is_dir and entry.is_file(follow_symlinks=False)
                if not (is_dir or is_file):
                    continue  # FIFO, socket, device
                rel = d.rel + name
                if filtering and _ignored(rel + "/" if is_dir else rel, chain, cli):
                    continue
                if st is None:
                    st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished since the folder was listed
            except OSError as e:
                yield WalkError(Path(entry.path), rootp, _reason(e))
                continue

            if is_dir:
                sub = _Dir(entry.path, rel + "/", chain, (st.st_dev, st.st_ino))
                (deferred if link else subdirs).append(sub)
                continue
            path = entry.path
            if seen_files is not None:
                if path in seen_files:
                    continue
                seen_files.add(path)
            # Cheap (no open); catches mode-000 files for non-root users up front.
            if not os.access(path, os.R_OK):
                yield WalkError(Path(path), rootp, "permission denied")
                continue
            yield FoundFile(Path(path), rootp, st.st_size, st.st_mtime_ns)
        stack.extend(reversed(subdirs))  # pop() then takes them in sorted order


def _ignored(rel: str, chain: _Chain, cli: GitIgnoreSpec | None) -> bool:
    if cli is not None and cli.check_file(rel).include:
        return True
    ignored = False
    for prefix, spec in chain:  # shallow to deep: the deepest match decides
        verdict = spec.check_file(rel[len(prefix) :]).include
        if verdict is not None:
            ignored = verdict
    return ignored


def _read_ignore(path: str) -> tuple[GitIgnoreSpec | None, str | None]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except IsADirectoryError:
        return None, None
    except OSError as e:
        return None, f"cannot read ignore file: {_reason(e)}"
    try:
        return GitIgnoreSpec.from_lines(lines), None
    except ValueError as e:
        return None, f"bad ignore file: {e}"


def _reason(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "permission denied"
    if e.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    if e.errno == errno.ENOENT:
        return "no such file or directory"
    text = e.strerror or str(e)
    return text[:1].lower() + text[1:]


def walk_within(
    roots: Sequence[str | Path],
    within: Sequence[str | Path],
    *,
    include_hidden: bool = False,
    excludes: Sequence[str] = (),
    follow_symlinks: bool = False,
) -> Iterator[FoundFile | WalkError]:
    """What :func:`walk` over ``roots`` yields at or below the ``within`` paths, and nothing else.

    Each ``within`` path (a file or folder under one of the roots, or one that is gone)
    is judged by the full walk's rules: hidden names on the way down from its root, the
    ``excludes`` and every ``.xmrignore`` from the root down. A path under no root, gone,
    hidden or excluded yields nothing. Watch mode (xmr.watch) looks only where something
    changed with it. Overlapping ``within`` paths are the caller's to avoid.
    """
    root_list = sorted({os.path.abspath(os.fspath(r)) for r in roots}, key=len, reverse=True)
    try:
        cli = GitIgnoreSpec.from_lines(excludes) if excludes else None
    except ValueError as e:
        raise UsageError(f"bad --exclude pattern: {e}") from None
    visited: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    for target in (os.path.abspath(os.fspath(p)) for p in within):
        # the deepest root holding the target (roots may nest)
        root = next((r for r in root_list if target == r or target.startswith(r.rstrip(os.sep) + os.sep)), None)
        if root is None:
            continue
        if target == root:
            try:
                st: os.stat_result | OSError = os.stat(root)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as e:
                st = e
            yield from _walk([(root, st)], include_hidden, cli, follow_symlinks)
            continue
        yield from _walk_below(root, target, visited, seen_files, include_hidden, cli, follow_symlinks)


def _walk_below(
    root: str,
    target: str,
    visited: set[tuple[int, int]],
    seen_files: set[str],
    include_hidden: bool,
    cli: GitIgnoreSpec | None,
    follow_symlinks: bool,
) -> Iterator[FoundFile | WalkError]:
    """Go down from ``root`` to ``target`` as the full walk would, then walk (or yield) it."""
    rootp = Path(root)
    names = os.path.relpath(target, root).split(os.sep)
    folder, rel = root, ""
    chain: _Chain = ()
    for i, name in enumerate(names):
        ignore = os.path.join(folder, IGNORE_FILE)
        if os.path.lexists(ignore):
            spec, _ = _read_ignore(ignore)  # a broken one is reported by the full walk, not per change
            if spec is not None:
                chain = (*chain, (rel, spec))
        if not include_hidden and name.startswith("."):
            return
        path = os.path.join(folder, name)
        try:
            st = os.lstat(path)
            link = stat.S_ISLNK(st.st_mode)
            if link:
                if not follow_symlinks:
                    return
                st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return  # gone (a broken symlink included): the caller's rows below it vanish
        except OSError as e:
            yield WalkError(Path(path), rootp, _reason(e))
            return
        is_dir, is_file = stat.S_ISDIR(st.st_mode), stat.S_ISREG(st.st_mode)
        last = i == len(names) - 1
        if not (is_dir or (last and is_file)):
            return  # a FIFO, socket or device; or a folder on the way that is a file now
        here = rel + name
        if (cli is not None or chain) and _ignored(here + "/" if is_dir else here, chain, cli):
            return
        if not last:
            folder, rel = path, here + "/"
            continue
        if is_dir:
            top = _Dir(path, here + "/", chain, (st.st_dev, st.st_ino))
            yield from _walk_dir(top, rootp, visited, seen_files, include_hidden, cli, follow_symlinks)
        elif path not in seen_files:
            seen_files.add(path)
            if os.access(path, os.R_OK):
                yield FoundFile(Path(path), rootp, st.st_size, st.st_mtime_ns)
            else:
                yield WalkError(Path(path), rootp, "permission denied")
