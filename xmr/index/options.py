"""Run options, the run report and the progress protocol of ``xmr index``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from xmr import media
from xmr.documents import MAX_DOCUMENT_BYTES


class Progress(Protocol):
    """How the core reports progress; the CLI renders it on stderr."""

    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def warn(self, message: str) -> None: ...


class _NoProgress:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


@dataclass
class IndexOptions:
    include_hidden: bool = False
    excludes: Sequence[str] = ()
    follow_symlinks: bool = False
    modalities: Sequence[str] = field(default_factory=media.names)  # every registered kind (xmr.media)
    retry_errors: bool = False
    workers: int | None = None  # None: chosen from the core count; 0: decode in this process
    audio_window_s: float = 10.0
    audio_hop_s: float = 10.0
    video_every_s: float = 2.0  # a video frame at least this often (and one per scene cut)
    video_max_frames: int = 300  # frames per video at most: longer videos spread them
    decode_timeout_s: float | None = 900.0  # per video file (checked inside the frame loop)
    max_text_bytes: int = MAX_DOCUMENT_BYTES
    text_extensions: Sequence[str] = ()  # added to the document policy as plain text (--text-ext)
    store_snippets: bool = False  # keep passages' text in the catalogue (default: offsets only)
    commit_segments: int = 64  # flush a batch once it holds this many segments
    commit_files: int = 512  # ... or this many files
    checkpoint_ann: bool = True
    # embed the bridge vocabulary once both spaces hold vectors (see Finish._embed_concepts); off by
    # default: a search embeds it when a bridge is first needed, cached per model (xmr.bridge)
    bridge_concepts: bool = False
    wait: bool = False  # another writer holds the index: wait for it instead of failing
    codes: str | None = None  # binary|none|auto (xmr.store.policy); None: as recorded, else auto
    within: Sequence[str] = ()  # watch mode: walk only these paths under the roots (only files there can vanish)
    store: str | None = None  # --store: vector backend to record (name, milvus://HOST:PORT, milvus-lite:PATH)
    rebuild_store: bool = False  # refill the vector store from the catalogue (backends with ``rebuild``)
    # text in pixels (xmr.ocr): auto (images the gate picks, PDFs without a text layer), all, off;
    # None: as recorded in the index, else auto (xmr.ocr.policy)
    ocr: str | None = None


@dataclass
class IndexReport:
    run_id: int
    roots: list[str]
    found: int = 0
    unchanged: int = 0
    metadata_only: int = 0  # of the unchanged: read again for their metadata alone (not embedded)
    new: int = 0
    changed: int = 0
    moved: int = 0
    duplicates: int = 0
    removed: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    embedded_files: int = 0
    segments: int = 0
    files_read: int = 0
    bytes_read: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    errors: list[dict[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("errors")
        d.pop("roots")
        d.pop("run_id")
        return d
