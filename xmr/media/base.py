"""What a media kind is: how xmr recognises, decodes, queries and previews one kind of file.

A kind turns a file into *encoder inputs* of a fixed vocabulary, the segment kinds the
encoders embed: ``image`` (one preprocessed image), ``audio_window`` (windows of a signal)
and ``text_passage`` (a document cut into passages by each space's encoder). Everything
downstream (the indexer's batches, the search groups, the catalogue) works on segment
kinds and spaces, so a new kind needs no change there: see docs/architecture-media.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# the segment kinds an encoder can embed, and which encoder method takes them
IMAGE_SEGMENT, AUDIO_SEGMENT, TEXT_SEGMENT = "image", "audio_window", "text_passage"
SEGMENT_KINDS = (IMAGE_SEGMENT, AUDIO_SEGMENT, TEXT_SEGMENT)


@dataclass(frozen=True)
class DecodeContext:
    """What a decoder may need besides the path; picklable, so it travels to decode workers."""

    image_preprocessor: Callable[[str], Any] | None = None  # the clip encoder's (path -> pixels)
    audio_window_s: float = 10.0
    audio_hop_s: float = 10.0
    max_text_bytes: int | None = None  # None: the document reader's default
    policy: Any = None  # xmr.documents.Policy; None: the default policy
    head: bytes | None = None  # the file's first bytes when the caller already read them
    query: bool = False  # a query file: the user named it, so read it without the indexing policy
    video: Any = None  # xmr.preprocess.video.Sampling; None: the defaults
    ocr: Any = None  # xmr.ocr.record.OcrConfig: read text in pixels (images, scanned PDFs); None: off
    on_page: Callable[[int, int], None] | None = None  # (done, total) pages of a long decode (scanned PDF)


@dataclass
class Decoded:
    """One file decoded into encoder inputs: one per segment kind its kind yields (a kind that
    yields images in one space and audio windows in another fills both)."""

    pixels: Any = None  # float32 array (C, H, W): one IMAGE_SEGMENT
    frames: list[tuple[float, float, Any]] | None = None  # (start_s, end_s, pixels): timed IMAGE_SEGMENTs
    audio_windows: list[tuple[float, float, Any]] | None = None  # (start_s, end_s, samples): AUDIO_SEGMENTs
    text: str | None = None  # cut into TEXT_SEGMENTs by each space's encoder
    pages: tuple[tuple[int, int, int], ...] | None = None  # PDF pages: (number, start, end) in ``text``
    junk_guard: bool = True  # drop passages that are mostly non-words
    dropped: int = 0  # inputs left out while decoding (video frames nearly equal to the previous one)
    provenance: dict[str, Any] | None = None  # how it was decoded (video sampling), shown by `xmr info`
    text_origin: str | None = None  # where ``text`` came from when not the file's own text ("ocr")
    ocr: Any = None  # xmr.ocr.record.OcrRecord: how text was recognised in its pixels, per line
    skip: str | None = None  # readable but not indexed (not a document, a missing tool)
    error: str | None = None  # one-line reason: the file is recorded as failed


def _octet_stream(name: str) -> str:
    return "application/octet-stream"


@dataclass(frozen=True)
class MediaKind:
    """One kind of file xmr indexes. ``name`` is the modality stored in the catalogue and shown
    as a result's type (``--type``). Functions must be module-level (picklable): the indexer
    sends kinds to its decode workers."""

    name: str
    # space -> the segment kind this kind's files yield there (order: the first space is the
    # one a query of this kind is bridged from)
    segments: Mapping[str, str]
    # path, context -> Decoded. Heavy imports (PIL, soundfile, torch) belong inside it.
    decode: Callable[[str, DecodeContext], Decoded]
    # Recognition. Built-in kinds are recognised together by xmr.sniff.classify (content first,
    # one pass over the magic numbers); an added kind claims a file when ``sniff(name, head,
    # size)`` is true, or, without a sniff function, when the name has one of ``extensions``.
    extensions: frozenset[str] = frozenset()
    sniff: Callable[[str, bytes, int], bool] | None = None
    # the QueryPart kind of a file of this kind used as a query (--image, an upload, "like");
    # None: such files cannot be queries
    query_kind: str | None = None
    # /api/files: the media type the original is served as (from its name), and the derived
    # views it has ("thumb": a JPEG made by ``thumbnail``; "audio": a playable WAV)
    mime: Callable[[str], str] = _octet_stream
    previews: tuple[str, ...] = ()
    # (path or binary file, size, the indexed name) -> a PIL image at most size x size, upright
    thumbnail: Callable[[Any, int, str], Any] | None = None
    # path -> descriptive metadata (keys among xmr.media.meta.FIELDS: date taken, camera, GPS,
    # title, artist...), read in the decode workers; never raises. None: the kind has none
    metadata: Callable[[str], dict[str, Any]] | None = None
    # space -> a segment kind its files yield there only when the decoder finds it: text
    # recognised in an image (``Decoded.text``) becomes passages in both text spaces. Searched
    # with that group; the space's encoder loads only once a file has such input.
    optional_segments: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def spaces(self) -> tuple[str, ...]:
        return tuple(self.segments)

    @property
    def needs_image_preprocessor(self) -> bool:
        return IMAGE_SEGMENT in self.segments.values()
