"""The built-in media kinds: image, audio and text (documents).

They wrap the existing recognisers (xmr.sniff) and decoders (xmr.preprocess, xmr.documents),
imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import mimetypes
import os
from typing import Any

from xmr.media.base import AUDIO_SEGMENT, IMAGE_SEGMENT, TEXT_SEGMENT, DecodeContext, Decoded, MediaKind

IMAGE, AUDIO, TEXT = "image", "audio", "text"


def decode_image(path: str, ctx: DecodeContext) -> Decoded:
    import numpy as np

    if ctx.image_preprocessor is None:
        return Decoded(error="no image preprocessor (the clip model is not loaded)")
    ocr = ctx.ocr if not ctx.query else None
    both = getattr(ctx.image_preprocessor, "decode", None) if ocr is not None else None
    if both is not None:  # one decode: OCR's gate reads the image CLIP sees
        image, pixels = both(path)
    else:
        image, pixels = None, ctx.image_preprocessor(path)
    out = Decoded(pixels=np.asarray(pixels, dtype=np.float32))
    if ocr is not None:
        from xmr.ocr.read import read_image

        # text in the pixels: passages of the image in both text spaces (never fails the image)
        out.ocr = read_image(path, ocr, decoded=image)
        if out.ocr.text:
            from xmr.ocr.record import ORIGIN

            out.text, out.text_origin = out.ocr.text, ORIGIN
    return out


def decode_audio(path: str, ctx: DecodeContext) -> Decoded:
    from xmr.preprocess.audio import load_audio, windows

    audio = load_audio(path)
    wins = windows(audio, window_s=ctx.audio_window_s, hop_s=ctx.audio_hop_s)
    return Decoded(audio_windows=[(w.start_s, w.end_s, w.samples) for w in wins])


def decode_text(path: str, ctx: DecodeContext) -> Decoded:
    from xmr.documents import MAX_DOCUMENT_BYTES, NO_TEXT_LAYER, read_any, read_document
    from xmr.sniff import HEAD_BYTES

    max_bytes = MAX_DOCUMENT_BYTES if ctx.max_text_bytes is None else ctx.max_text_bytes
    if ctx.query:
        doc = read_any(path, max_bytes=max_bytes)  # PDF and HTML too, whatever the name
        return Decoded(text=doc.text, pages=doc.pages, junk_guard=False)
    head = ctx.head
    if head is None:
        try:
            with open(path, "rb") as f:
                head = f.read(HEAD_BYTES)
        except OSError as exc:
            return Decoded(error=f"cannot read: {exc.strerror or exc}")
    doc, skip = read_document(path, head, policy=ctx.policy, max_bytes=max_bytes)
    if doc is None and skip == NO_TEXT_LAYER and ctx.ocr is not None:
        return _scanned_pdf(path, ctx, max_bytes)
    if doc is None:
        return Decoded(skip=skip)
    if not doc.text:
        return Decoded(error="no text to index (only whitespace)")
    junk_guard = ctx.policy.junk_guard(path) if ctx.policy is not None else True
    return Decoded(text=doc.text, pages=doc.pages, junk_guard=junk_guard)


def _scanned_pdf(path: str, ctx: DecodeContext, max_bytes: int) -> Decoded:
    """A PDF without a text layer, read by OCR page by page: a document like a PDF with text."""
    from xmr.documents import NO_TEXT_LAYER
    from xmr.ocr.read import read_pdf
    from xmr.ocr.record import FAILED, ORIGIN

    rec = read_pdf(path, ctx.ocr, max_chars=max_bytes, on_page=ctx.on_page)
    if not rec.text:
        found = "OCR failed: " + (rec.reason or "") if rec.status == FAILED else "no text recognised"
        return Decoded(skip=f"{NO_TEXT_LAYER} ({found})", ocr=rec)
    return Decoded(text=rec.text, pages=rec.pages, text_origin=ORIGIN, ocr=rec)


def _guessed(name: str, prefix: str) -> str:
    guessed = mimetypes.guess_type(os.path.basename(name))[0] or ""
    if guessed.startswith(prefix + "/") and "svg" not in guessed:
        return guessed
    return "application/octet-stream"


def image_mime(name: str) -> str:
    return _guessed(name, IMAGE)


def audio_mime(name: str) -> str:
    return _guessed(name, AUDIO)


def text_mime(name: str) -> str:
    return "text/plain"  # never text/html or the like: served bytes are not a page


def image_thumbnail(src: Any, size: int, name: str) -> Any:
    from xmr.preprocess.image import load_image

    return load_image(src, target_size=(size, size), name=name)  # EXIF orientation applied


def builtin_kinds() -> tuple[MediaKind, ...]:
    from xmr import sniff
    from xmr.media.meta import audio_metadata, image_metadata, text_metadata
    from xmr.media.video import VIDEO_KIND

    return (
        MediaKind(
            name=IMAGE,
            segments={"clip": IMAGE_SEGMENT},
            decode=decode_image,
            extensions=sniff.IMAGE_EXTENSIONS,
            query_kind="image",
            mime=image_mime,
            previews=("thumb",),
            thumbnail=image_thumbnail,
            metadata=image_metadata,
            # text read in the image (OCR, --ocr): passages in both text spaces, like a document's
            optional_segments={"clip": TEXT_SEGMENT, "clap": TEXT_SEGMENT},
        ),
        MediaKind(
            name=AUDIO,
            segments={"clap": AUDIO_SEGMENT},
            decode=decode_audio,
            extensions=sniff.AUDIO_EXTENSIONS,
            query_kind="audio",
            mime=audio_mime,
            previews=("audio",),
            metadata=audio_metadata,
        ),
        # text goes to both spaces so a query of any modality reaches it
        MediaKind(
            name=TEXT,
            segments={"clip": TEXT_SEGMENT, "clap": TEXT_SEGMENT},
            decode=decode_text,
            extensions=sniff.TEXT_EXTENSIONS,
            query_kind="text_file",
            mime=text_mime,
            metadata=text_metadata,
        ),
        VIDEO_KIND,
    )
