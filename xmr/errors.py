"""The one error hierarchy of xmr.

The library raises these; only the CLI turns them into a one-line message on
stderr and the exit code named by ``exit_code``. Exit codes are documented in
README.md ("Exit codes") and must stay distinct per class of failure.
"""

from __future__ import annotations

import errno
from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # unexpected internal error (a bug): traceback with XMR_DEBUG=1
    USAGE = 2  # bad command line (also what typer/click use)
    NOT_FOUND = 3  # a path given on the command line does not exist
    NO_INDEX = 4  # no catalogue yet, or nothing indexed that the query can reach
    MODEL_MISSING = 5  # weights not found locally / cannot be downloaded
    BAD_INPUT = 6  # a query file or piece of media that cannot be decoded
    CATALOGUE = 7  # catalogue unreadable, locked for too long, or from a newer xmr
    MODEL = 8  # model weights present but unusable (wrong architecture, bad checkpoint)
    DEVICE = 9  # requested device not available
    NO_SPACE = 10  # the disk filled up while writing the index; what was committed is kept
    DAMAGED = 11  # `xmr status --check` found the index damaged (the message says what)
    LOCKED = 12  # another xmr process is writing this index (xmr index --wait waits for it)
    READ_ONLY = 13  # the index directory (or its catalogue) cannot be written
    REGRESSED = 20  # `xmr eval --compare`: a metric got worse beyond the tolerance
    INTERRUPTED = 130  # Ctrl-C; committed work is kept


class XmrError(Exception):
    """Base class: ``reason`` is the human sentence, ``path`` the file concerned."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, reason: str, *, path: str | Path | None = None, hint: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.path = None if path is None else str(path)
        self.hint = hint

    def __str__(self) -> str:
        msg = f"{self.path}: {self.reason}" if self.path else self.reason
        if self.hint:
            msg = f"{msg} ({self.hint})"
        return msg


class UsageError(XmrError):
    exit_code = ExitCode.USAGE


class PathNotFound(XmrError):
    exit_code = ExitCode.NOT_FOUND


class NoIndex(XmrError):
    """Nothing to search: no catalogue, or nothing the query can reach."""

    exit_code = ExitCode.NO_INDEX


class ModelMissing(XmrError):
    exit_code = ExitCode.MODEL_MISSING


class ModelError(XmrError):
    exit_code = ExitCode.MODEL


class MediaError(XmrError):
    """A file that cannot be read or decoded. During indexing it is recorded per
    file and the run goes on; as a query it ends the command."""

    exit_code = ExitCode.BAD_INPUT


class CatalogueError(XmrError):
    exit_code = ExitCode.CATALOGUE


class IndexDamaged(XmrError):
    exit_code = ExitCode.DAMAGED


class Regressed(XmrError):
    """`xmr eval --compare` found a metric worse beyond the tolerance (the table says which)."""

    exit_code = ExitCode.REGRESSED


class DeviceError(XmrError):
    exit_code = ExitCode.DEVICE


class Interrupted(XmrError):
    exit_code = ExitCode.INTERRUPTED


class DiskFull(XmrError):
    """No space left (or quota exceeded) while writing; the failed write was rolled back."""

    exit_code = ExitCode.NO_SPACE


class IndexLocked(XmrError):
    """Another process holds the index lock; ``pid`` is its process id when known."""

    exit_code = ExitCode.LOCKED

    def __init__(self, reason: str, *, pid: int | None = None, **kw: object):
        super().__init__(reason, **kw)  # type: ignore[arg-type]
        self.pid = pid


class IndexReadOnly(XmrError):
    exit_code = ExitCode.READ_ONLY


_SQLITE_READONLY, _SQLITE_FULL = 8, 13  # primary result codes (sqlite3.h)


def write_failure(exc: BaseException, path: str | Path, what: str) -> XmrError | None:
    """The xmr error for a failed write of ``what`` to ``path``, when it is a known cause.

    Disk full and read-only conditions reach xmr as OSError (errno) or as
    sqlite3 errors (result code); anything else returns None and is re-raised
    by the caller as it was.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    code = None if code is None else code & 0xFF  # extended codes carry the primary in the low byte
    err = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    if code == _SQLITE_FULL or err in (errno.ENOSPC, errno.EDQUOT):
        return disk_full(path, what)
    if code == _SQLITE_READONLY or err in (errno.EROFS, errno.EACCES, errno.EPERM):
        return read_only(path, what)
    return None


def disk_full(path: str | Path, what: str) -> DiskFull:
    return DiskFull(
        f"disk full while {what}; that write was rolled back and everything committed before is kept",
        path=path,
        hint="free some space, then run the same command again: it resumes where it stopped",
    )


def read_only(path: str | Path, what: str) -> IndexReadOnly:
    return IndexReadOnly(
        f"the index is read-only (cannot write it while {what})",
        path=path,
        hint="searching it still works; make it writable, or pass --index to index elsewhere",
    )
