"""Media kinds: the seam through which xmr learns a new kind of file.

See xmr.media.base for what a kind is and docs/architecture-media.md for adding one.
"""

from __future__ import annotations

from xmr.media.base import (
    AUDIO_SEGMENT,
    IMAGE_SEGMENT,
    SEGMENT_KINDS,
    TEXT_SEGMENT,
    DecodeContext,
    Decoded,
    MediaKind,
)
from xmr.media.registry import (
    classify,
    classify_path,
    find,
    for_query_kind,
    get,
    groups,
    kinds,
    names,
    optional_spaces_for,
    query_kinds,
    register,
    snapshot,
    spaces_for,
    unregister,
)

__all__ = [
    "AUDIO_SEGMENT",
    "IMAGE_SEGMENT",
    "SEGMENT_KINDS",
    "TEXT_SEGMENT",
    "DecodeContext",
    "Decoded",
    "MediaKind",
    "classify",
    "classify_path",
    "find",
    "for_query_kind",
    "get",
    "groups",
    "kinds",
    "names",
    "optional_spaces_for",
    "query_kinds",
    "register",
    "snapshot",
    "spaces_for",
    "unregister",
]
