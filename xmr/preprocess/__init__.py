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


def read_capped(path: str | os.PathLike[str], max_bytes: int | None) -> tuple[bytes, bool]:
    """The file's first ``max_bytes`` (all of it for ``None``) and whether there was more."""
    try:
        with open(path, "rb") as fh:
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    except OSError as exc:
        raise read_error(exc, path) from None
    if max_bytes is not None and len(data) > max_bytes:
        return data[:max_bytes], True
    return data, False
