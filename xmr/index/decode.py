"""Decoding: hash, classify and decode one file. Runs in worker processes (or inline).

Two steps, so that only the driver consults the catalogue: ``identify`` (hash and
classify) and, when the driver finds that the content still lacks vectors in a space
it wants, ``decode`` (pixels, audio windows, document text). Both are picklable
module functions; neither opens the catalogue.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

from xmr import media
from xmr.documents import HTML_EXTENSIONS, PLAIN_EXTENSIONS
from xmr.errors import XmrError
from xmr.index.items import DecodeConfig, _Item, _Prepared
from xmr.sniff import HEAD_BYTES

WORKER_NICE = 10  # added to the decode workers' niceness (os.nice)


def _init_worker(added_kinds: Sequence[media.MediaKind] = (), pages: Any = None) -> None:
    """``added_kinds``: the media kinds registered beyond the built-in ones in the parent
    (a spawned worker starts with a fresh registry). ``pages``: a queue for the progress of
    long decodes (a scanned PDF's pages), or None."""
    from xmr.procs import die_with_parent

    if pages is not None:
        set_page_reporter(lambda path, done, total: pages.put((path, done, total)))

    for kind in added_kinds:
        if media.find(kind.name) is None:
            media.register(kind)

    die_with_parent()  # a killed `xmr index` leaves no decoder behind
    # Ctrl-C is the parent's to handle; workers just stop when it shuts the pool down
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # decoders run in the encoder's idle gaps rather than taking a core from its threads:
    # 192 JPEGs, 2 rounds each, in the same run: 19.8 s at nice 10 against 21.8 s at 0
    # (benchmarks/vs_naive.py; the naive loop took 21.1 and 20.4 s)
    with contextlib.suppress(OSError, AttributeError):
        os.nice(WORKER_NICE)


def _hash_file(path: str) -> tuple[str, bytes, int]:
    h = hashlib.blake2b(digest_size=16)
    n = 0
    head = b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            if not head:
                head = chunk[:HEAD_BYTES]
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), head, n


def _decoding_items(work: Sequence[_Item]) -> int:
    """Items whose preparation is real work (images, audio, PDFs, anything unknown).

    Plain text and HTML cost far less to read than to embed, and a decode worker beside
    the encoder's threads only takes cores from it: 3,000 one-line notes indexed in
    101 s inline against 115 s with a worker (2 cores). Such runs prepare inline.
    """
    light = PLAIN_EXTENSIONS | HTML_EXTENSIONS
    return sum(
        1
        for item in work
        # by name even when the modality is known: a PDF is text, but its extraction is work
        if item.known_modality in ("image", "audio", "video") or os.path.splitext(item.path)[1].lower() not in light
    )


def identify(item: _Item) -> _Prepared:
    """The content's hash and modality: known for a pending file, else read and classified."""
    out = _Prepared(item=item)
    try:
        if item.known_hash is not None and item.known_modality is not None:
            out.hash, out.modality = item.known_hash, item.known_modality
            out.meta = read_metadata(item.path, out.modality)  # a back-fill reads only this
            return out
        out.opened = True
        try:
            out.hash, out.head, out.bytes_read = _hash_file(item.path)
        except OSError as exc:
            out.error = f"cannot read: {exc.strerror or exc}"
            return out
        c = media.classify(os.path.basename(item.path), out.head, out.bytes_read)
        out.modality = c.modality
        if c.reason:
            out.error = c.reason
        elif c.skip:
            out.skip = c.skip
        else:
            out.meta = read_metadata(item.path, out.modality)
    except XmrError as exc:
        out.error = exc.reason
    except Exception as exc:  # a decoder bug must not end the run; it is recorded per file
        out.error = f"{type(exc).__name__}: {exc}"
    return out


def read_metadata(path: str, modality: str) -> dict[str, object]:
    """The file's descriptive metadata through its media kind (``{}``: none, or unreadable)."""
    kind = media.find(modality)
    if kind is None or kind.metadata is None:
        return {}
    try:
        return dict(kind.metadata(path))
    except Exception:  # metadata is a bonus: a reader's bug must not fail the file
        return {}


def _has_input(d: media.Decoded, segment: str) -> bool:
    """Whether a decoded file holds input for that segment kind."""
    if segment == media.TEXT_SEGMENT:
        return d.text is not None
    if segment == media.AUDIO_SEGMENT:
        return bool(d.audio_windows)
    return d.pixels is not None or bool(d.frames)


# where a worker reports the pages of a long decode (a scanned PDF): set by _init_worker in a
# worker, by the scheduler inline; None: not reported
_PAGE_REPORTER: Callable[[str, int, int], None] | None = None


def set_page_reporter(reporter: Callable[[str, int, int], None] | None) -> None:
    global _PAGE_REPORTER
    _PAGE_REPORTER = reporter


def _page_progress(path: str) -> Callable[[int, int], None] | None:
    reporter = _PAGE_REPORTER
    if reporter is None:
        return None
    return lambda done, total: reporter(path, done, total)


def decode(out: _Prepared, config: DecodeConfig) -> _Prepared:
    """Decode an identified file whose content still lacks vectors (``out.spaces_done`` set
    by the driver): pixels, audio windows or document text."""
    item = out.item
    head, out.head = out.head, None  # not sent back: decoding is its last use
    try:
        kind = media.get(out.modality)
        if kind.needs_image_preprocessor and config.image_preprocessor is None:
            out.undecoded = True  # not seen as an image before the run (xmr.needed), or changed since
            return out
        out.opened = True
        ctx = media.DecodeContext(
            image_preprocessor=config.image_preprocessor,
            audio_window_s=config.audio_window_s,
            audio_hop_s=config.audio_hop_s,
            max_text_bytes=config.max_text_bytes,
            policy=config.policy,
            head=head,
            video=config.video,
            ocr=config.ocr,
            on_page=_page_progress(item.path),
        )
        d = kind.decode(item.path, ctx)
        out.pixels, out.audio_windows, out.text, out.pages = d.pixels, d.audio_windows, d.text, d.pages
        out.junk_guard, out.skip, out.error = d.junk_guard, d.skip, d.error
        out.frames, out.dropped, out.provenance = d.frames, d.dropped, d.provenance
        out.text_origin, out.ocr = d.text_origin, d.ocr
        # optional input found (an image's recognised text): the spaces it goes to, embedded anew
        out.extra_spaces = tuple(s for s, seg in kind.optional_segments.items() if _has_input(d, seg))
        out.spaces_done -= set(out.extra_spaces)
    except XmrError as exc:
        out.error = exc.reason
    except Exception as exc:  # a decoder bug must not end the run; it is recorded per file
        out.error = f"{type(exc).__name__}: {exc}"
    return out
