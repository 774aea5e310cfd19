"""Where xmr keeps things. The only module that decides locations.

Index directory precedence: explicit ``--index DIR`` > ``XMR_HOME`` > the
per-user data dir from platformdirs. Model weights downloaded by xmr go to
``XMR_MODELS_DIR`` or the per-user cache dir.

Everything xmr writes in the index directory is private to the user (see
"private modes" below).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from pathlib import Path

import platformdirs

APP = "xmr"
CATALOGUE_NAME = "catalogue.db"
ANN_DIR_NAME = "ann"


def index_dir(override: str | os.PathLike[str] | None = None) -> Path:
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get("XMR_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def catalogue_path(index: Path) -> Path:
    return index / CATALOGUE_NAME


def ann_dir(index: Path) -> Path:
    return index / ANN_DIR_NAME


def models_dir() -> Path:
    env = os.environ.get("XMR_MODELS_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_cache_dir(APP, appauthor=False)) / "models"


def kernels_dir() -> Path:
    """Native kernels xmr compiles for this machine (``xmr.store.hamming_kernel``)."""
    env = os.environ.get("XMR_KERNELS_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_cache_dir(APP, appauthor=False)) / "kernels"


# -- private modes ------------------------------------------------------------------------------
# The index holds every indexed path, the vectors, the server's thumbnails and decoded
# audio, and passage text with --store-snippets, so it is the user's alone: directories
# 0700, files 0600. Every writer of the index directory goes through the helpers below
# (the catalogue, lock files, ANN files and their state, caches); SQLite gives its
# -wal/-shm files the mode of the main database, so creating catalogue.db 0600 covers them.

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_GROUP_OTHER = 0o077


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as a directory only its owner can enter (0700).

    A directory that already exists is left as it is (see ``tighten_index_modes``);
    the parents are not xmr's and get the usual umask modes.
    """
    path = Path(path)
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=PRIVATE_DIR_MODE)
            # mkdir's mode passes through the umask, which only ever removes bits; chmod
            # makes it exact whatever the umask
            os.chmod(path, PRIVATE_DIR_MODE)
    return path


def open_private(path: str | os.PathLike[str], flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """``os.open`` for a file in the index: a file it creates is 0600 (owner only).

    Returns the descriptor; use it for lock files and files written in place.
    """
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE_MODE)
    if flags & os.O_CREAT:
        with contextlib.suppress(OSError):  # not our file (another owner): leave its mode
            st = os.fstat(fd)
            if st.st_mode & _GROUP_OTHER:
                os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~_GROUP_OTHER)
    return fd


def create_private_file(path: str | os.PathLike[str]) -> None:
    """Make sure ``path`` exists with mode 0600 before a library writes it.

    For files whose writer we do not control (SQLite's database, hnswlib's
    save_index): both keep the mode of a file that already exists.
    """
    os.close(open_private(path, os.O_WRONLY | os.O_CREAT))


def write_private_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename), mode 0600.

    For whole-file caches and small state (calibration samples, tokens,
    thumbnails); the directory is created 0700 when missing.
    """
    path = Path(path)
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def tighten_index_modes(index: Path) -> str | None:
    """Remove group and other permissions from an index made before xmr kept it private.

    Walks the index directory (without following links): directories become
    0700 and files 0600 (an owner bit that is off stays off, so a read-only
    file stays read-only). Returns a one-line notice for the caller to show
    when it changed anything, else None; the next call finds nothing to do.
    """
    changed = 0
    if not index.is_dir():
        return None
    names = [str(index)]
    for top, dirs, files in os.walk(index):  # os.walk does not follow links
        names.extend(os.path.join(top, n) for n in dirs + files)
    for name in names:
        try:
            st = os.lstat(name)
            if stat.S_ISLNK(st.st_mode) or not st.st_mode & _GROUP_OTHER:
                continue
            os.chmod(name, stat.S_IMODE(st.st_mode) & ~_GROUP_OTHER)
            changed += 1
        except OSError:  # vanished meanwhile, or not ours: the writes themselves will tell
            continue
    if not changed:
        return None
    return (
        f"{index}: the index was readable by other users; made it private "
        f"({changed} file(s) and folder(s) set to owner-only access)"
    )
