"""Classify a file by its content (magic bytes and a cheap probe), not only its name.

The extension only decides whether a mismatch is worth reporting: a ``.txt``
full of binary garbage is an error the user should see, an unknown binary file
with an unknown extension is skipped quietly. Content always wins over the
extension when it is a kind xmr can index (``photo.dat`` holding a JPEG is an
image, ``notes.jpg`` holding prose is text).

Only the first :data:`HEAD_BYTES` bytes are looked at, so classifying is cheap;
whether the whole file decodes is found out later by the preprocessing step.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from xmr.documents import DOCUMENT_EXTENSIONS
from xmr.preprocess import formats

HEAD_BYTES = 8192

IMAGE, AUDIO, TEXT, OTHER = "image", "audio", "text", "other"

# Extension -> the modality the name claims. Used only to decide whether a file
# whose content is not what its name says gets reported (with a reason).
IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .apng .gif .webp .bmp .dib .tif .tiff .ico .cur"
    " .ppm .pgm .pbm .pnm .jp2 .j2k .jpf .jpx .psd .qoi .heic .heif .avif".split()
)
# .m4a/.aac/.wma/.weba are listed so that a user sees *why* they are not indexed
# (libsndfile cannot decode them) instead of them silently vanishing.
AUDIO_EXTENSIONS = frozenset(
    ".wav .wave .bwf .rf64 .w64 .flac .ogg .oga .opus .mp3 .mp2 .mpga .aif .aiff .aifc"
    " .caf .au .snd .m4a .aac .wma .weba".split()
)
TEXT_EXTENSIONS = DOCUMENT_EXTENSIONS

EXTENSION_MODALITY: dict[str, str] = {
    **{e: IMAGE for e in IMAGE_EXTENSIONS},
    **{e: AUDIO for e in AUDIO_EXTENSIONS},
    **{e: TEXT for e in TEXT_EXTENSIONS},
}

_NOT = {IMAGE: "not an image", AUDIO: "not audio", TEXT: "not text"}


@dataclass(frozen=True)
class Classification:
    modality: str  # "image" | "audio" | "text" | "other"
    reason: str | None = None  # set when the file should be reported as an error
    # What was recognised ("jpeg", "ogg/vorbis", "utf-16-le", ...): a hint for
    # decoders and messages only, so it does not take part in equality.
    detail: str | None = field(default=None, compare=False)
    # set when the file is of a kind xmr indexes but is skipped (not an error): a tool is missing
    skip: str | None = None


class _Sig(NamedTuple):
    modality: str  # image | audio | text (pdf) | other
    detail: str
    unsupported: str | None = None  # a media kind this is, but that xmr cannot decode
    skip: str | None = None  # decodable only with a tool that is missing (Ghostscript)


def claimed_modality(name: str) -> str | None:
    """The modality the file name's extension claims, or None."""
    return EXTENSION_MODALITY.get(os.path.splitext(name)[1].lower())


def classify(name: str, head: bytes, size: int) -> Classification:
    """Classify a file from its name, its first HEAD_BYTES bytes and its size."""
    claimed = claimed_modality(name)
    if size == 0 or not head:
        return Classification(OTHER, "empty file" if claimed else None)

    sig = _signature(head, size, claimed)
    if formats.is_raw_name(name) and (sig is None or sig.modality == OTHER or sig.detail in ("tiff", "bigtiff")):
        # camera RAW: mostly TIFF-like containers that Pillow would show as a thumbnail at best
        return Classification(IMAGE, None, "raw", None if formats.rawpy_available() else formats.NEEDS_RAWPY)
    if sig is not None:
        if sig.modality in (IMAGE, AUDIO, TEXT):
            return Classification(sig.modality, None, sig.detail, sig.skip)
        if claimed is None:
            return Classification(OTHER, None, sig.detail)
        if sig.unsupported == claimed:
            return Classification(OTHER, f"unsupported {claimed} format: {sig.detail}", sig.detail)
        return Classification(OTHER, f"{_NOT[claimed]}: {sig.detail}", sig.detail)

    encoding = _text_encoding(head, size)
    if encoding is not None:
        return Classification(TEXT, None, encoding)

    # Last resort for the long tail of formats libsndfile knows (PAF, HTK, SDS...).
    fmt = _libsndfile_format(head)
    if fmt is not None:
        return Classification(AUDIO, None, fmt.lower())

    if claimed == TEXT:
        return Classification(OTHER, "not text: binary content")
    if claimed is not None:
        return Classification(OTHER, f"{_NOT[claimed]}: unrecognised content")
    return Classification(OTHER)


def classify_path(path: str | os.PathLike[str] | os.PathLike[bytes] | bytes) -> Classification:
    """Read the head of ``path`` and classify it; unreadable files get a reason."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(HEAD_BYTES)
    except OSError as e:
        return Classification(OTHER, f"cannot read: {e.strerror or e}")
    return classify(os.path.basename(os.fsdecode(path)), head, size)


# --- signatures -------------------------------------------------------------------------------


def _signature(head: bytes, size: int, claimed: str | None) -> _Sig | None:
    h = head
    # images
    if h.startswith(b"\xff\xd8\xff"):
        return _Sig(IMAGE, "jpeg")
    if h.startswith(b"\x89PNG\r\n\x1a\n"):
        return _Sig(IMAGE, "png")
    if h[:6] in (b"GIF87a", b"GIF89a"):
        return _Sig(IMAGE, "gif")
    if h[:4] == b"RIFF" and h[8:12] == b"WEBP":
        return _Sig(IMAGE, "webp")
    if h[:4] in (b"II*\x00", b"MM\x00*"):
        return _Sig(IMAGE, "tiff")
    if h[:4] in (b"II+\x00", b"MM\x00+"):
        if _pillow_accepts("TIFF", h):
            return _Sig(IMAGE, "bigtiff")
        return _Sig(OTHER, "BigTIFF (this Pillow cannot read it)", unsupported=IMAGE)
    if h.startswith(b"%PDF-"):
        return _Sig(TEXT, "pdf")
    # ASCII image formats: images, never text
    if h.startswith(b"/* XPM */"):
        return _Sig(IMAGE, "xpm")
    if _XBM.match(h[:512]):
        return _Sig(IMAGE, "xbm")
    if h.startswith(b"%!PS") or h[:4] == b"\xc5\xd0\xd3\xc6":
        return _Sig(IMAGE, "eps", skip=None if formats.has_ghostscript() else formats.NEEDS_GHOSTSCRIPT)
    if _is_fli(h):
        return _Sig(IMAGE, "fli")
    if _is_bmp(h):
        return _Sig(IMAGE, "bmp")
    if _is_ico(h):
        return _Sig(IMAGE, "ico")
    if _is_pnm(h):
        return _Sig(IMAGE, "pnm")
    if h.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or h.startswith(b"\xff\x4f\xff\x51"):
        return _Sig(IMAGE, "jpeg2000")
    if h[:4] == b"8BPS" and h[4:6] in (b"\x00\x01", b"\x00\x02"):
        return _Sig(IMAGE, "psd")
    if h[:4] == b"qoif":
        return _Sig(IMAGE, "qoi")
    if h[4:8] == b"ftyp":
        return _isobmff(h)

    # audio
    if h[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and h[8:12] == b"WAVE":
        return _Sig(AUDIO, "wav")
    if h[:4] == b"RIFF" and h[8:12] == b"AVI ":
        return _Sig(OTHER, "AVI video")
    if h[:4] == b"fLaC":
        return _Sig(AUDIO, "flac")
    if h[:4] == b"OggS":
        return _ogg(h)
    if h[:3] == b"ID3" and len(h) >= 10 and h[3] in (2, 3, 4) and all(b < 0x80 for b in h[6:10]):
        return _after_id3(h, size)
    if _mpeg_audio_at(h, 0, size):
        return _Sig(AUDIO, "mp3")
    if h[:4] == b"FORM" and h[8:12] in (b"AIFF", b"AIFC"):
        return _Sig(AUDIO, "aiff")
    if h[:4] == b"FORM" and h[8:12] in (b"8SVX", b"16SV"):
        return _Sig(AUDIO, "svx")
    if h[:6] == b"caff\x00\x01":
        return _Sig(AUDIO, "caf")
    if h[:16] == b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00":
        return _Sig(AUDIO, "w64")
    if h[:4] in (b".snd", b"dns."):
        return _Sig(AUDIO, "au")
    if h[:8] == b"NIST_1A\n":  # an ASCII header: must be caught before the text check
        return _Sig(AUDIO, "nist")
    if h[:20] == b"Creative Voice File\x1a":
        return _Sig(AUDIO, "voc")
    if h[:4] in _IRCAM_MAGIC:
        return _Sig(AUDIO, "ircam")
    if h[:4] == b"MThd":
        return _Sig(OTHER, "MIDI (no recorded audio)", unsupported=AUDIO)
    if h[:4] == b"\x30\x26\xb2\x75":  # ASF GUID prefix
        return _Sig(OTHER, "ASF/WMA", unsupported=AUDIO)
    if h[:4] == b"\x1a\x45\xdf\xa3":
        return _Sig(OTHER, "Matroska/WebM container", unsupported=AUDIO)
    if len(h) >= 2 and h[0] == 0xFF and (h[1] & 0xF6) == 0xF0:
        return _Sig(OTHER, "AAC (ADTS)", unsupported=AUDIO)

    # ordinary non-media formats, only so that a mismatch gets a helpful reason
    for magic, what in _OTHER_MAGIC:
        if h.startswith(magic):
            return _Sig(OTHER, what)
    # An extension-claimed MP3 may start with junk before the first frame.
    if claimed == AUDIO and _find_mpeg_sync(h, size):
        return _Sig(AUDIO, "mp3")
    return None


_IRCAM_MAGIC = frozenset(
    bytes.fromhex(x)
    for x in ("64a30100", "0001a364", "64a30200", "0002a364", "64a30300", "0003a364", "64a30400", "0004a364")
)

_OTHER_MAGIC = (
    (b"PK\x03\x04", "ZIP archive"),
    (b"\x1f\x8b", "gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"\x7fELF", "executable"),
    (b"SQLite format 3\x00", "SQLite database"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "MS Office document"),
)


_XBM = re.compile(rb"(?:\s*/\*.*?\*/)?\s*#define[ \t]+\S*_width[ \t]+\d+\s+#define[ \t]+\S*_height[ \t]+\d+", re.DOTALL)


def _is_fli(h: bytes) -> bool:
    # Autodesk FLI/FLC: magic at offset 4, depth 8, flags 0 or 3 (Pillow's own test)
    if len(h) < 16 or h[4:6] not in (b"\x11\xaf", b"\x12\xaf"):
        return False
    depth, flags = struct.unpack_from("<HH", h, 12)
    return depth in (0, 8) and flags in (0, 3)


def _pillow_accepts(fmt: str, h: bytes) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    Image.init()
    entry = Image.OPEN.get(fmt)
    return entry is not None and (entry[1] is None or bool(entry[1](h)))


def _is_bmp(h: bytes) -> bool:
    # "BM" alone is too weak (text can start with it): also check the DIB header size.
    if h[:2] != b"BM" or len(h) < 18:
        return False
    (dib,) = struct.unpack_from("<I", h, 14)
    return dib in (12, 16, 40, 52, 56, 64, 108, 124)


def _is_ico(h: bytes) -> bool:
    if h[:4] not in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00") or len(h) < 22:
        return False
    (count,) = struct.unpack_from("<H", h, 4)
    return 0 < count <= 256 and h[9] == 0  # first entry's reserved byte


_PNM = re.compile(rb"P([1-6])(?:\s+|\s*#[^\n]*\n)+(\d+)\s+(?:#[^\n]*\n\s*)*(\d+)")


def _is_pnm(h: bytes) -> bool:
    # Netpbm has a two-byte magic, so require a parsable width and height too.
    return h[:1] == b"P" and _PNM.match(h[:512]) is not None


_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})


def _isobmff(h: bytes) -> _Sig:
    (box,) = struct.unpack_from(">I", h, 0)
    end = min(max(box, 16), len(h))
    brands = {h[8:12]} | {h[i : i + 4] for i in range(16, end - 3, 4)}
    if brands & {b"avif", b"avis"}:
        if _pillow_can("AVIF"):
            return _Sig(IMAGE, "avif")
        return _Sig(OTHER, "AVIF (Pillow has no AVIF support)", unsupported=IMAGE)
    if brands & _HEIF_BRANDS:
        formats.register_heif()
        if _pillow_can("HEIF"):
            return _Sig(IMAGE, "heif")
        return _Sig(OTHER, "HEIC/HEIF (no HEIF plugin for Pillow; install pillow-heif)", unsupported=IMAGE)
    if h[8:12] in (b"M4A ", b"M4B ", b"M4P "):
        return _Sig(OTHER, "MP4/AAC audio (M4A)", unsupported=AUDIO)
    if h[8:12] == b"qt  ":
        return _Sig(OTHER, "QuickTime video")
    return _Sig(OTHER, "MP4 container", unsupported=AUDIO)


def _pillow_can(fmt: str) -> bool:
    # Asked each time (cheap once initialised) so that a plugin registered later
    # (pillow_heif.register_heif_opener()) is seen.
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    Image.init()
    return fmt in Image.OPEN


_OGG_CODECS = (
    (b"\x01vorbis", AUDIO, "vorbis"),
    (b"OpusHead", AUDIO, "opus"),
    (b"\x7fFLAC", AUDIO, "flac"),
    (b"Speex   ", "unsupported", "speex"),
    (b"CELT    ", "unsupported", "celt"),
    (b"\x80theora", "video", "theora"),
    (b"BBCD\x00", "video", "dirac"),
    (b"\x80daala", "video", "daala"),
    (b"\x01video", "video", "ogm video"),
    (b"fishead\x00", "skip", "skeleton"),
)


def _ogg(h: bytes) -> _Sig:
    # A multiplexed Ogg starts with one beginning-of-stream page per logical
    # stream; their first packets name the codecs.
    found: list[tuple[str, str]] = []
    pos = 0
    while h.startswith(b"OggS", pos) and pos + 27 <= len(h):
        if not h[pos + 5] & 0x02:  # BOS pages all come first
            break
        nseg = h[pos + 26]
        data = pos + 27 + nseg
        if data > len(h):
            break
        packet = h[data : data + 16]
        for magic, kind, codec in _OGG_CODECS:
            if packet.startswith(magic):
                found.append((kind, codec))
                break
        else:
            found.append(("unknown", "unknown"))
        pos = data + sum(h[pos + 27 : data])
    video = [c for k, c in found if k == "video"]
    if video:
        return _Sig(OTHER, f"Ogg video ({video[0]})")
    audio = [c for k, c in found if k == AUDIO]
    if audio:
        return _Sig(AUDIO, f"ogg/{audio[0]}")
    unsupported = [c for k, c in found if k == "unsupported"]
    if unsupported:
        return _Sig(OTHER, f"Ogg/{unsupported[0]}", unsupported=AUDIO)
    return _Sig(OTHER, "Ogg stream with no known codec")


def _after_id3(h: bytes, size: int) -> _Sig:
    tag = 10 + ((h[6] << 21) | (h[7] << 14) | (h[8] << 7) | h[9])
    if h[5] & 0x10:  # footer present
        tag += 10
    if h[tag : tag + 4] == b"fLaC":
        return _Sig(AUDIO, "flac")
    # The tag may hold album art that runs past the head: trust the ID3 tag then.
    return _Sig(AUDIO, "mp3")


# MPEG audio frame header tables (kbit/s; index 0 "free" and 15 "bad" are rejected).
_BITRATES = {
    (3, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (3, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (3, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mpeg_frame(h: bytes, i: int) -> tuple[int, tuple[int, int, int]] | None:
    """(frame length, (version, layer, rate index)) of a valid frame header at i."""
    if i + 4 > len(h) or h[i] != 0xFF or (h[i + 1] & 0xE0) != 0xE0:
        return None
    b1, b2, b3 = h[i + 1], h[i + 2], h[i + 3]
    version, layer = (b1 >> 3) & 3, (b1 >> 1) & 3
    rate_idx, br_idx, pad = (b2 >> 2) & 3, b2 >> 4, (b2 >> 1) & 1
    if version == 1 or layer == 0 or br_idx in (0, 15) or rate_idx == 3 or (b3 & 3) == 2:
        return None
    bitrate = _BITRATES[(3 if version == 3 else 2, layer)][br_idx] * 1000
    rate = _SAMPLE_RATES[version][rate_idx]
    if layer == 3:  # Layer I
        length = (12 * bitrate // rate + pad) * 4
    elif layer == 1 and version != 3:  # Layer III, MPEG-2/2.5
        length = 72 * bitrate // rate + pad
    else:
        length = 144 * bitrate // rate + pad
    return length, (version, layer, rate_idx)


def _mpeg_audio_at(h: bytes, i: int, size: int) -> bool:
    # One header is 4 bytes of weak evidence: the next frame must follow where the
    # first says it ends (unless that lies past the head or the end of the file).
    first = _mpeg_frame(h, i)
    if first is None:
        return False
    length, key = first
    nxt = i + length
    if nxt >= size or nxt + 4 > len(h):
        return nxt <= size
    second = _mpeg_frame(h, nxt)
    return second is not None and second[1] == key


def _find_mpeg_sync(h: bytes, size: int) -> bool:
    i = h.find(b"\xff", 1)
    while i != -1 and i + 4 <= len(h):
        frame = _mpeg_frame(h, i)
        # when scanning past junk, demand two real frames inside the head
        if frame is not None and i + frame[0] + 4 <= len(h) and _mpeg_audio_at(h, i, size):
            return True
        i = h.find(b"\xff", i + 1)
    return False


# --- text -------------------------------------------------------------------------------------

# C0 controls except \t \n \v \f \r and ESC (ANSI colours in logs), DEL, C1 controls,
# and U+FFFD from bytes undefined in cp1252.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f\ufffd]")
_MAX_CONTROL_RATIO = 0.02

_BOMS = (
    (codecs.BOM_UTF8, "utf-8", "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32-le"),  # before UTF-16 LE: it shares the prefix
    (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16-be"),
)


def _decode(data: bytes, encoding: str, final: bool) -> str | None:
    # Incremental decoding tolerates a character cut in two at the end of the head.
    try:
        return codecs.getincrementaldecoder(encoding)("strict").decode(data, final=final)
    except UnicodeDecodeError:
        return None


def _text_encoding(head: bytes, size: int) -> str | None:
    """The encoding if the head looks like text, else None."""
    final = size <= len(head)
    for bom, codec, name in _BOMS:
        if head.startswith(bom):
            text = _decode(head[len(bom) :], codec, final)
            return name if text is not None and _mostly_printable(text) else None
    if b"\x00" in head:
        return None
    text = _decode(head, "utf-8", final)
    if text is not None:
        return "utf-8" if _mostly_printable(text) else None
    # Legacy 8-bit text (latin-1 / cp1252): any bytes decode, so only the share of
    # control characters tells it from binary.
    text = head.decode("cp1252", errors="replace")
    return "cp1252" if _mostly_printable(text) else None


def _mostly_printable(text: str) -> bool:
    if not text:
        return True
    return len(_CONTROL.findall(text)) <= len(text) * _MAX_CONTROL_RATIO


# --- libsndfile probe -------------------------------------------------------------------------


def _libsndfile_format(head: bytes) -> str | None:
    try:
        import soundfile
    except (ImportError, OSError):  # no libsndfile: nothing more to learn
        return None
    try:
        with soundfile.SoundFile(io.BytesIO(head)) as f:
            return f.format
    except Exception:  # libsndfile's "format not recognised" and friends
        return None
