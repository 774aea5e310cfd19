"""Which embedding spaces an index run's work needs, before any model is loaded.

Loading a model is most of the cost of a small run (an images-only folder has no
use for CLAP), so ``xmr index`` looks at the work first: an item the catalogue
already classified counts by its recorded modality, any other by the head of
the file, classified the way the workers will (``xmr.media.classify``).

The look is bounded: it stops as soon as every configured space is needed, and
after ``MAX_OPENED`` files read. What it did not see is caught when a batch is
committed (``_Run._commit`` loads a missing encoder then), so a bound never
costs correctness, only a model loaded a little later.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from xmr.media import classify
from xmr.sniff import HEAD_BYTES

# heads read at most before the first model loads: 2,000 took 30 ms from the page cache
# here; a cold disk pays a seek each, so a huge folder is not looked at in full
MAX_OPENED = 2000


class _WorkItem(Protocol):
    path: str
    size: int
    known_hash: str | None
    known_modality: str | None


@dataclass
class Needs:
    spaces: set[str] = field(default_factory=set)
    complete: bool = True  # every item was looked at, or every configured space is needed
    opened: int = 0  # files whose head was read


def modality_of(path: str, size: int) -> str | None:
    """The modality a worker will find from the file's head, or None when nothing of it
    gets embedded (unreadable, empty, misnamed, or skipped for a missing tool)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError:
        return None  # the worker records the error
    c = classify(os.path.basename(path), head, size)
    return None if c.reason or c.skip else c.modality


def spaces_needed(
    items: Iterable[_WorkItem],
    spaces_for: Mapping[str, tuple[str, ...]],
    configured: Iterable[str],
    *,
    done: Callable[[str, str], bool],
    max_opened: int | None = None,
) -> Needs:
    """The spaces some item needs vectors in. ``done(hash, space)``: that content already has
    its vectors there by the model the run will use (known items only: a new file's hash is
    not known before it is read in full)."""
    limit = MAX_OPENED if max_opened is None else max_opened
    wanted = set(configured)
    out = Needs()
    for item in items:
        if out.spaces >= wanted:
            return out
        if item.known_hash is not None and item.known_modality is not None:
            h = item.known_hash  # the same shortcut decoding takes (xmr.index.decode.identify)
            out.spaces.update(s for s in spaces_for.get(item.known_modality, ()) if not done(h, s))
            continue
        if out.opened >= limit:
            out.complete = False
            return out
        out.opened += 1
        modality = modality_of(item.path, item.size)
        if modality is not None:
            out.spaces.update(spaces_for.get(modality, ()))
    return out
