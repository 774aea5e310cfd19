"""The media kinds xmr knows, by name: the one place that lists them.

The built-in kinds (xmr.media.builtin) are registered on first use, so importing this
module costs nothing. Consumers iterate :func:`kinds` instead of naming modalities.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from xmr.errors import UsageError
from xmr.media.base import MediaKind

if TYPE_CHECKING:
    from xmr.sniff import Classification

_KINDS: dict[str, MediaKind] = {}
_BUILTIN: set[str] = set()


def _ensure() -> dict[str, MediaKind]:
    if not _BUILTIN:
        from xmr.media.builtin import builtin_kinds

        for kind in builtin_kinds():
            _KINDS.setdefault(kind.name, kind)
            _BUILTIN.add(kind.name)
    return _KINDS


def register(kind: MediaKind) -> Callable[[], None]:
    """Add a kind; returns the function that removes it again (tests undo what they add)."""
    kinds_ = _ensure()
    if kind.name in kinds_ or kind.name == "other":
        raise UsageError(f"media kind {kind.name!r} is already registered")
    kinds_[kind.name] = kind
    return lambda: unregister(kind.name)


def unregister(name: str) -> None:
    if name in _ensure() and name in _BUILTIN:
        raise UsageError(f"media kind {name!r} is built in")
    _KINDS.pop(name, None)


def get(name: str) -> MediaKind:
    kind = _ensure().get(name)
    if kind is None:
        raise UsageError(f"unknown media kind {name!r}; choose from {', '.join(names())}")
    return kind


def find(name: str | None) -> MediaKind | None:
    """The kind of that name, or None (``other``, NULL, a kind no longer registered)."""
    return _ensure().get(name) if name else None


def kinds() -> tuple[MediaKind, ...]:
    return tuple(_ensure().values())


def names() -> tuple[str, ...]:
    """Every modality a file can be indexed as: the result types of a search."""
    return tuple(_ensure())


def spaces_for(selected: Iterable[str] | None = None) -> dict[str, tuple[str, ...]]:
    """modality -> the spaces its files are embedded in (() for kinds not selected)."""
    chosen = None if selected is None else set(selected)
    return {k.name: k.spaces if chosen is None or k.name in chosen else () for k in kinds()}


def groups() -> dict[tuple[str, str], tuple[str, ...]]:
    """(space, segment kind) -> the modalities whose files yield such segments."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for k in kinds():
        for space, segment in (*k.segments.items(), *k.optional_segments.items()):
            if k.name not in out.get((space, segment), ()):
                out[(space, segment)] = (*out.get((space, segment), ()), k.name)
    return out


def optional_spaces_for(selected: Iterable[str] | None = None) -> dict[str, tuple[str, ...]]:
    """modality -> the spaces its files are embedded in only when decoding finds such input
    (a kind's ``optional_segments``; () for kinds not selected)."""
    chosen = None if selected is None else set(selected)
    return {
        k.name: tuple(s for s in k.optional_segments if s not in k.segments)
        if chosen is None or k.name in chosen
        else ()
        for k in kinds()
    }


def for_query_kind(query_kind: str) -> MediaKind | None:
    return next((k for k in kinds() if k.query_kind == query_kind), None)


def query_kinds() -> dict[str, tuple[str, ...]]:
    """Query part kind -> the spaces that embed it directly (plain text: those of text files)."""
    out = {"text": get("text").spaces} if "text" in _ensure() else {}
    out.update({k.query_kind: k.spaces for k in kinds() if k.query_kind})
    return out


def snapshot() -> tuple[MediaKind, ...]:
    """The kinds added to the built-in ones, for a decode worker (spawned: a fresh registry)."""
    return tuple(k for k in kinds() if k.name not in _BUILTIN)


def classify(name: str, head: bytes, size: int, added: Iterable[MediaKind] | None = None) -> Classification:
    """Classify a file: an added kind that claims it first, else xmr.sniff's content rules.

    ``added``: the added kinds to try (a worker passes the parent's :func:`snapshot`)."""
    from xmr.sniff import Classification
    from xmr.sniff import classify as sniff_classify

    ext = os.path.splitext(name)[1].lower()
    added = snapshot() if added is None else tuple(added)
    for kind in added:
        if kind.sniff is not None and head and kind.sniff(name, head, size):
            return Classification(kind.name, None, kind.name)
        if kind.sniff is None and ext in kind.extensions:
            if size == 0 or not head:
                return Classification("other", "empty file")
            return Classification(kind.name, None, kind.name)
    c = sniff_classify(name, head, size)
    if c.modality == "other" and head:
        # built-in kinds with a recogniser of their own (video) claim what xmr.sniff does not
        for kind in kinds():
            if kind.name in _BUILTIN and kind.sniff is not None and kind.sniff(name, head, size):
                return Classification(kind.name, None, kind.name)
    claimed = next((k for k in (*added, *kinds()) if k.sniff is not None and ext in k.extensions), None)
    if c.modality == "other" and c.reason is None and claimed is not None:
        # as xmr.sniff does for the built-in kinds: a name that claims a kind its content is not is reported
        why = "empty file" if size == 0 or not head else f"not {claimed.name}: unrecognised content"
        return Classification("other", why, c.detail)
    return c


def classify_path(path: str | os.PathLike[str], added: Iterable[MediaKind] | None = None) -> Classification:
    """Read the head of ``path`` and classify it (see :func:`classify`); unreadable files get a reason."""
    from xmr.sniff import HEAD_BYTES, Classification

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(HEAD_BYTES)
    except OSError as e:
        return Classification("other", f"cannot read: {e.strerror or e}")
    return classify(os.path.basename(os.fsdecode(path)), head, size, added)
