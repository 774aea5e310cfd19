"""Decoding and preprocessing of media: pure functions, no model needed."""

from __future__ import annotations

import os

from xmr.errors import MediaError


def read_error(exc: OSError, path: str | os.PathLike[str]) -> MediaError:
    """The one-line MediaError for a file that could not be opened or read."""
    if isinstance(exc, FileNotFoundError):
        reason = "no such file"
    elif isinstance(exc, IsADirectoryError):
        reason = "is a directory"
    elif isinstance(exc, PermissionError):
        reason = "permission denied"
    else:
        reason = exc.strerror or str(exc)
    return MediaError(f"cannot read file: {reason}", path=path)
