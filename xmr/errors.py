"""The one error hierarchy of xmr.

The library raises these; only the CLI turns them into a one-line message on
stderr and the exit code named by ``exit_code``. Exit codes are documented in
README.md ("Exit codes") and must stay distinct per class of failure.
"""

from __future__ import annotations

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
    DAMAGED = 11  # `xmr status --check` found the index damaged (the message says what)
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
