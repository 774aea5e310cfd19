"""The index lock: one writer of files and vectors at a time (searches need none).

``xmr index`` and ``xmr remove`` hold an flock on ``index.lock`` in the index
directory for as long as they write; the holder's pid is written into the file,
so a second writer can say whom it is waiting for. The kernel drops the lock
when its holder dies, even by SIGKILL, so a stale lock file never blocks.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from xmr import paths
from xmr.errors import IndexLocked, read_only

LOCK_NAME = "index.lock"


def lock_path(index_dir: Path) -> Path:
    return index_dir / LOCK_NAME


def holder_pid(fd: int) -> int | None:
    """The pid recorded in an open lock file, if it reads as one."""
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


@contextmanager
def index_lock(
    index_dir: Path, *, wait: bool = False, on_wait: Callable[[int | None], None] | None = None
) -> Iterator[None]:
    """Hold the index's writer lock; creates the index directory (0700) when missing.

    Busy: raises ``IndexLocked`` naming the holder's pid, or with ``wait`` blocks
    until the holder is done (``on_wait(pid)`` is called once first, so the
    caller can say so). A directory that cannot be written raises ``IndexReadOnly``.
    """
    try:
        paths.make_private_dir(index_dir)
        fd = paths.open_private(lock_path(index_dir))
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise read_only(index_dir, "taking the index lock") from exc
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            pid = holder_pid(fd)
            if not wait:
                who = f"pid {pid}" if pid else "pid unknown"
                raise IndexLocked(
                    f"another xmr process ({who}) is writing this index",
                    path=index_dir,
                    pid=pid,
                    hint="wait for it to finish, or run 'xmr index --wait' to queue behind it",
                ) from exc
            if on_wait is not None:
                on_wait(pid)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
