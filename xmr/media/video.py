"""The video kind: sampled frames in the clip space, the soundtrack in the clap space.

Recognised by content (ISO-BMFF ``ftyp`` other than HEIF/AVIF images and M4A audio,
Matroska/WebM EBML, AVI, MPEG-TS and MPEG-PS), decoded with PyAV (xmr.preprocess.video).
See docs/video.md.
"""

from __future__ import annotations

import mimetypes
import os
import struct
from typing import Any

from xmr.media.base import AUDIO_SEGMENT, IMAGE_SEGMENT, DecodeContext, Decoded, MediaKind
from xmr.media.meta import video_metadata

VIDEO = "video"
VIDEO_EXTENSIONS = frozenset(".mp4 .m4v .mov .qt .3gp .3g2 .mkv .webm .avi .ts .mts .m2ts .mpg .mpeg .vob .ogv".split())
# ISO-BMFF major brands that are stills or sound, not video (xmr.sniff handles those)
_NOT_VIDEO_BRANDS = frozenset(
    {
        b"avif",
        b"avis",
        b"heic",
        b"heix",
        b"heim",
        b"heis",
        b"hevc",
        b"hevx",
        b"mif1",
        b"msf1",
        b"M4A ",
        b"M4B ",
        b"M4P ",
    }
)


def sniff_video(name: str, head: bytes, size: int) -> bool:
    """A video container, by its first bytes."""
    h = head
    if len(h) >= 12 and h[4:8] == b"ftyp":
        return h[8:12] not in _NOT_VIDEO_BRANDS and not _compatible_still(h)
    if h[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska / WebM
        doc = h[:64]
        return b"matroska" in doc or b"webm" in doc
    if h[:4] == b"RIFF" and h[8:12] == b"AVI ":
        return True
    if h[:4] == b"\x00\x00\x01\xba":  # MPEG program stream
        return True
    return _mpeg_ts(h)


def _compatible_still(h: bytes) -> bool:
    (box,) = struct.unpack_from(">I", h, 0)
    end = min(max(box, 16), len(h))
    brands = {h[i : i + 4] for i in range(16, end - 3, 4)}
    # a HEIF image sequence lists mif1/msf1 beside its own brand; a video does not
    return bool(brands & {b"mif1", b"msf1", b"avif", b"avis"})


def _mpeg_ts(h: bytes) -> bool:
    for packet in (188, 192):  # plain TS, and M2TS with its 4-byte timestamp
        off = 4 if packet == 192 else 0
        n = min(4, (len(h) - off) // packet)
        if n >= 3 and all(h[off + i * packet] == 0x47 for i in range(n)):
            return True
    return False


def decode_video(path: str, ctx: DecodeContext) -> Decoded:
    from xmr.preprocess.video import SampleStats, Sampling, sample_frames, soundtrack_windows

    convert = getattr(ctx.image_preprocessor, "from_pil", None)
    if convert is None and not ctx.query:
        return Decoded(error="no image preprocessor for video frames (the clip model is not loaded)")
    sampling = ctx.video if isinstance(ctx.video, Sampling) else Sampling()
    stats = SampleStats()
    # a query decoded for the clap space only needs the sound
    frames = sample_frames(path, sampling, convert, stats) if convert is not None else []
    wins = soundtrack_windows(
        path,
        window_s=ctx.audio_window_s,
        hop_s=ctx.audio_hop_s,
        deadline_s=sampling.deadline_s,
        picture_end_s=frames[-1][1] if frames else None,
    )
    audio = wins is not None
    wins = wins or []
    return Decoded(
        frames=frames,
        audio_windows=[(w.start_s, w.end_s, w.samples) for w in wins],
        dropped=stats.dropped_same + stats.dropped_cap,
        provenance={
            "sampling": sampling.describe(),
            "interval_s": round(stats.interval_s, 3),
            "keyframes_only": stats.keyframes_only,
            "duration_s": round(stats.duration_s, 3),
            "frames_decoded": stats.decoded,
            "frames_kept": stats.kept,
            "frames_dropped_as_same": stats.dropped_same,
            "frames_dropped_over_cap": stats.dropped_cap,
            "scene_cuts": stats.scene_cuts,
            "audio_track": audio,
            "audio_windows": len(wins),
            "notes": stats.notes,
        },
    )


def video_mime(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    known = {".mkv": "video/x-matroska", ".webm": "video/webm", ".mov": "video/quicktime", ".ts": "video/mp2t"}
    if ext in known:
        return known[ext]
    guessed = mimetypes.guess_type(os.path.basename(name))[0] or ""
    return guessed if guessed.startswith("video/") else "video/mp4"


def video_thumbnail(src: Any, size: int, name: str, at_s: float = 0.0) -> Any:
    """The frame at ``at_s`` seconds, upright, at most size x size."""
    from xmr.preprocess.video import frame_at

    img = frame_at(src, at_s, name=name, max_short_side=None)
    img.thumbnail((size, size))
    return img


VIDEO_KIND = MediaKind(
    name=VIDEO,
    # the frames first: a video query is bridged from its pictures
    segments={"clip": IMAGE_SEGMENT, "clap": AUDIO_SEGMENT},
    decode=decode_video,
    extensions=VIDEO_EXTENSIONS,
    sniff=sniff_video,
    query_kind="video",
    mime=video_mime,
    previews=("thumb",),
    thumbnail=video_thumbnail,
    extra={"timed": True},
    metadata=video_metadata,
)
