"""The file-system steps a crash-safe index write needs: flock, fsync of a directory, pread."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from xmr import paths

try:  # POSIX only; elsewhere readers fall back to retrying on mismatch
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def pread(fd: int, n: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows
    return os.read(fd, n)


def short_write_errno(fd: int, missing: int) -> int:
    """Why a write came out short: no room left (ENOSPC) or something else (EIO)."""
    try:
        st = os.fstatvfs(fd)
        return errno.ENOSPC if st.f_bavail * st.f_frsize < max(missing, st.f_frsize) else errno.EIO
    except OSError:
        return errno.EIO


def fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be fsynced elsewhere
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def flock(path: Path, exclusive: bool, *, create: bool) -> Iterator[bool]:
    """Hold an flock on ``path``; yields False (no lock) where that is impossible."""
    if fcntl is None:
        yield False
        return
    try:
        fd = paths.open_private(path, (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY)
    except OSError:  # read-only directory or no lock file yet: go on unlocked
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield True
    finally:
        os.close(fd)  # closing releases the lock
