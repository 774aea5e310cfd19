"""Where the ground truth of ``xmr eval`` comes from.

Either a CSV file, ``path,label[,caption]`` per row (paths relative to the CSV's
folder; a header row ``path,label[,caption]`` is optional; a file with several
labels has several rows; ``#`` starts a comment line), or by default each
file's parent folder name below the collection root (``dog/001.wav`` is a
"dog"; files directly in the root are unlabelled). Unlabelled files stay in
the index as distractors but are never queries or relevant.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from xmr.catalogue import path_key
from xmr.errors import MediaError, PathNotFound


@dataclass
class Labels:
    by_path: dict[str, frozenset[str]]  # catalogue path key -> labels
    captions: dict[str, list[str]] = field(default_factory=dict)  # label -> its captions, in file order
    source: str = "folders"  # "folders" or "csv"
    file: str | None = None  # the CSV

    def of(self, path: str) -> frozenset[str]:
        return self.by_path.get(path, frozenset())

    def names(self) -> list[str]:
        return sorted({lab for labs in self.by_path.values() for lab in labs})


def folder_labels(root: str, paths: Iterable[str]) -> Labels:
    """Each file's parent folder name (relative to ``root``) is its label."""
    root_key = path_key(os.path.abspath(root))[0].rstrip("/")
    out: dict[str, frozenset[str]] = {}
    for p in paths:
        parent = os.path.dirname(p)
        if parent.rstrip("/") != root_key:
            out[p] = frozenset({os.path.basename(parent)})
    return Labels(by_path=out)


def read_labels_csv(csv_file: str | os.PathLike[str]) -> Labels:
    """Parse a labels CSV; a bad row is an error naming the file and the line."""
    path = Path(csv_file).expanduser()
    if not path.is_file():
        raise PathNotFound("labels file not found", path=csv_file)
    base = Path(os.path.abspath(path)).parent  # not resolved: the indexer keeps symlinked paths as given
    labels: dict[str, set[str]] = {}
    captions: dict[str, list[str]] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise MediaError(f"labels file is not UTF-8 text ({exc.reason})", path=csv_file) from None
    except (OSError, csv.Error) as exc:
        raise MediaError(f"cannot read labels file: {exc}", path=csv_file) from None
    for line, row in enumerate(rows, 1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if line == 1 and [c.lower() for c in cells[:2]] == ["path", "label"]:
            continue
        if len(cells) < 2 or len(cells) > 3 or not cells[0] or not cells[1]:
            raise MediaError(f"line {line}: expected path,label[,caption], got {len(cells)} field(s)", path=csv_file)
        rel, label = cells[0], cells[1]
        full = Path(rel).expanduser()
        full = full if full.is_absolute() else base / full
        if not full.is_file():
            raise MediaError(f"line {line}: no such file {rel!r}", path=csv_file)
        key = path_key(os.path.abspath(full))[0]
        labels.setdefault(key, set()).add(label)
        if len(cells) == 3 and cells[2]:
            captions.setdefault(label, []).append(cells[2])
    if not labels:
        raise MediaError("no labelled files in the labels file", path=csv_file)
    return Labels(
        by_path={p: frozenset(v) for p, v in labels.items()}, captions=captions, source="csv", file=str(path)
    )
