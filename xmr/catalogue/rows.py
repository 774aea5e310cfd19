"""Values the catalogue hands out and takes: rows, segments, path keys, SQL helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def path_key(path: str | os.PathLike[str]) -> tuple[str, bytes | None]:
    """The catalogue key of a path and, for names that are not UTF-8, their raw bytes.

    SQLite text must be valid UTF-8; Linux names need not be. Such names are
    stored escaped for display and lookup, with the exact bytes kept aside.
    """
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text, None
    except UnicodeEncodeError:
        raw = os.fsencode(text)
        return raw.decode("utf-8", "backslashreplace"), raw


def fs_path(path: str, path_bytes: bytes | None) -> str:
    """Back from a catalogue row to a name the OS understands."""
    return os.fsdecode(path_bytes) if path_bytes is not None else path


@dataclass
class FileRow:
    id: int
    path: str
    path_bytes: bytes | None
    size: int
    mtime_ns: int
    hash: str | None
    modality: str | None
    status: str
    root: str | None = None

    @property
    def fs_path(self) -> str:
        return fs_path(self.path, self.path_bytes)


@dataclass
class SegmentData:
    """One thing that gets a vector: a whole image, an audio window, a text passage."""

    kind: str
    start_s: float | None = None
    end_s: float | None = None
    char_start: int | None = None
    char_end: int | None = None
    text: str | None = None  # stored only with --store-snippets; otherwise read from the file when shown
    page: int | None = None  # PDF page, from 1
    origin: str | None = None  # a text passage's source when not the file's own text: "ocr"


@dataclass
class SegmentRef:
    """A vector's segment and the content it belongs to (for rendering results)."""

    vector_id: int
    segment_id: int
    hash: str
    space: str
    model_id: str
    kind: str
    seq: int
    start_s: float | None
    end_s: float | None
    char_start: int | None
    char_end: int | None
    text: str | None
    page: int | None = None
    origin: str | None = None  # "ocr": text recognised in the file's pixels


def _under_clause(column: str, root: str) -> tuple[str, list[str]]:
    """SQL for 'column is root or below it' without LIKE (paths may contain % or _)."""
    root = path_key(root)[0].rstrip("/") or "/"
    if root == "/":
        return f"{column} >= '/'", []
    return f"({column} = ? OR ({column} >= ? AND {column} < ?))", [root, root + "/", root + "0"]


def _under_any(column: str, roots: Sequence[str]) -> tuple[str, list[str]]:
    """SQL for 'column is at or below any of roots'."""
    clauses, params = [], []
    for root in roots:
        clause, p = _under_clause(column, root)
        clauses.append(clause)
        params.extend(p)
    return "(" + " OR ".join(clauses) + ")", params


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
