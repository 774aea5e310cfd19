"""xmr.sniff: classification by content, and when a mismatch is reported."""

from __future__ import annotations

import builtins
import io
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from fixtures.make_fixtures import draw_scene, tone
from xmr import sniff
from xmr.preprocess import formats
from xmr.sniff import HEAD_BYTES, Classification, classify, classify_path

MEDIA = Path(__file__).resolve().parent.parent / "fixtures" / "media"


def sniff_bytes(name: str, data: bytes) -> Classification:
    return classify(name, data[:HEAD_BYTES], len(data))


def image_bytes(fmt: str, mode: str = "RGB", **kw: object) -> bytes:
    img = draw_scene(3, (48, 32))
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def audio_bytes(fmt: str, subtype: str, sr: int = 16000, seconds: float = 0.5) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, sr, (330.0, 440.0)), sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(n)


# --- the committed fixtures --------------------------------------------------------------------

FIXTURE_EXPECTED = {
    "images/orientation6.jpg": ("image", None),
    "images/gradient.jpg": ("image", None),
    "images/rgba.png": ("image", None),
    "images/animated.gif": ("image", None),
    "images/gray.png": ("image", None),
    "images/cmyk.jpg": ("image", None),
    "images/gray16.png": ("image", None),
    "images/mono.bmp": ("image", None),
    "images/picture.webp": ("image", None),
    "images/photo.dat": ("image", None),
    "images/palette.tif": ("image", None),
    "images/small.avif": ("image", None),
    "images/photo.heic": ("image", None),
    "images/scene.xpm": ("image", None),
    "images/glyph.xbm": ("image", None),
    "images/drawing.eps": ("image", None),
    "images/bayer.dng": ("image", None),
    "documents/manual.pdf": ("text", None),
    "documents/scanned.pdf": ("text", None),
    "documents/tide_pools.html": ("text", None),
    "text/hexdump.txt": ("text", None),  # text by content; the document policy skips it later
    "source/README.md": ("text", None),
    "source/tides/__init__.py": ("text", None),
    "source/tides/predict.py": ("text", None),
    "source/web/app.js": ("text", None),
    "source/data/harbours.json": ("text", None),
    "source/data/levels.csv": ("text", None),
    "audio/chord_c_major.wav": ("audio", None),
    "audio/chord_a_minor.flac": ("audio", None),
    "audio/surf_noise.ogg": ("audio", None),
    "audio/low_voice.opus": ("audio", None),
    "audio/high_voice.mp3": ("audio", None),
    "audio/sweep.aiff": ("audio", None),
    "audio/long_35s.ogg": ("audio", None),
    "text/astronomy.txt": ("text", None),
    "text/bread.md": ("text", None),
    "text/lighthouses_long.txt": ("text", None),
    "text/gardening_utf16.txt": ("text", None),
    "text/cafes_cp1252.txt": ("text", None),
    "text/notes.jpg": ("text", None),
    # broken files that still look like their kind: decoding reports them later
    "broken/truncated.jpg": ("image", None),
    "broken/corrupt.png": ("image", None),
    "broken/bad_codec.wav": ("audio", None),
    "broken/empty.wav": ("other", "empty file"),
    "broken/garbage.txt": ("other", "not text: binary content"),
    "broken/not_an_image.png": ("other", "not an image: unrecognised content"),
}


@pytest.mark.parametrize("rel", sorted(FIXTURE_EXPECTED))
def test_fixture_files(rel: str) -> None:
    modality, reason = FIXTURE_EXPECTED[rel]
    c = classify_path(MEDIA / rel)
    assert (c.modality, c.reason) == (modality, reason)


def test_every_fixture_is_listed() -> None:
    present = {p.relative_to(MEDIA).as_posix() for p in MEDIA.rglob("*") if p.is_file()}
    assert present == set(FIXTURE_EXPECTED)


def test_fixture_details() -> None:
    assert classify_path(MEDIA / "text/gardening_utf16.txt").detail == "utf-16-le"
    assert classify_path(MEDIA / "text/cafes_cp1252.txt").detail == "cp1252"
    assert classify_path(MEDIA / "audio/low_voice.opus").detail == "ogg/opus"
    assert classify_path(MEDIA / "audio/high_voice.mp3").detail == "mp3"


# --- images ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode", "detail"),
    [
        ("JPEG", "RGB", "jpeg"),
        ("PNG", "RGBA", "png"),
        ("GIF", "P", "gif"),
        ("WEBP", "RGB", "webp"),
        ("BMP", "RGB", "bmp"),
        ("BMP", "1", "bmp"),
        ("TIFF", "RGB", "tiff"),
        ("ICO", "RGBA", "ico"),
        ("PPM", "RGB", "pnm"),
        ("PPM", "L", "pnm"),
        ("PPM", "1", "pnm"),
        ("JPEG2000", "RGB", "jpeg2000"),
        ("QOI", "RGB", "qoi"),
        ("AVIF", "RGB", "avif"),
    ],
)
def test_images_by_content_whatever_the_name(fmt: str, mode: str, detail: str) -> None:
    data = image_bytes(fmt, mode)
    for name in ("picture", "picture.dat", "picture.wav", "picture.txt", "PICTURE.JPG"):
        c = sniff_bytes(name, data)
        assert c == Classification("image"), (name, c)
        assert c.detail == detail


def test_big_endian_tiff() -> None:
    img = draw_scene(1, (16, 16))
    buf = io.BytesIO()
    img.save(buf, format="TIFF")
    data = buf.getvalue()
    assert data[:4] == b"II*\x00"
    assert sniff_bytes("x", b"MM\x00*" + data[4:]).modality == "image"


def test_text_that_starts_like_a_weak_image_magic_is_text() -> None:
    # "BM" (BMP) and "P1".."P6" (Netpbm) are short magics; prose must not trip them.
    assert sniff_bytes("a.txt", b"BMW and Audi make cars. " * 10).modality == "text"
    assert sniff_bytes("a.txt", b"P5 was the fastest lap of the day.\n").modality == "text"


def heif_bytes(brand: bytes, compat: tuple[bytes, ...] = (b"mif1",)) -> bytes:
    body = brand + b"\x00\x00\x00\x00" + b"".join(compat)
    ftyp = struct.pack(">I", 8 + len(body)) + b"ftyp" + body
    return ftyp + struct.pack(">I", 16) + b"meta" + b"\x00" * 8 + random_bytes(500)


def test_heic_without_a_pillow_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "register_heif", lambda: False)  # as if pillow-heif were not installed
    Image.init()
    monkeypatch.delitem(Image.OPEN, "HEIF", raising=False)
    data = heif_bytes(b"heic")
    c = sniff_bytes("IMG_0001.HEIC", data)
    assert c.modality == "other"
    assert c.reason is not None and c.reason.startswith("unsupported image format: HEIC")
    # Not claimed to be an image: skipped quietly.
    assert sniff_bytes("blob.bin", data) == Classification("other")


def test_heic_with_a_pillow_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    Image.init()
    monkeypatch.setitem(Image.OPEN, "HEIF", (lambda *a: None, None))  # as pillow_heif registers it
    assert sniff_bytes("IMG_0001.heic", heif_bytes(b"heic")) == Classification("image")
    assert sniff_bytes("x.heif", heif_bytes(b"mif1", (b"mif1", b"heic"))) == Classification("image")


def test_avif_depends_on_pillow_support(monkeypatch: pytest.MonkeyPatch) -> None:
    data = heif_bytes(b"avif")
    assert sniff_bytes("a.avif", data) == Classification("image")
    Image.init()
    monkeypatch.delitem(Image.OPEN, "AVIF")
    c = sniff_bytes("a.avif", data)
    assert c.modality == "other" and c.reason and c.reason.startswith("unsupported image format: AVIF")


# --- audio -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "subtype", "sr", "detail"),
    [
        ("WAV", "PCM_16", 16000, "wav"),
        ("WAV", "FLOAT", 16000, "wav"),
        ("WAVEX", "PCM_24", 16000, "wav"),
        ("RF64", "PCM_16", 16000, "wav"),
        ("FLAC", "PCM_16", 44100, "flac"),
        ("OGG", "VORBIS", 48000, "ogg/vorbis"),
        ("OGG", "OPUS", 48000, "ogg/opus"),
        ("MP3", "MPEG_LAYER_III", 44100, "mp3"),
        ("AIFF", "PCM_16", 16000, "aiff"),
        ("CAF", "PCM_16", 16000, "caf"),
        ("W64", "PCM_16", 16000, "w64"),
        ("AU", "PCM_16", 16000, "au"),
        ("IRCAM", "PCM_16", 16000, "ircam"),
        ("NIST", "PCM_16", 16000, "nist"),
        ("VOC", "PCM_16", 16000, "voc"),
        ("SVX", "PCM_16", 16000, "svx"),
        # only the libsndfile probe knows these
        ("PAF", "PCM_16", 16000, "paf"),
        ("AVR", "PCM_16", 16000, "avr"),
        ("MPC2K", "PCM_16", 16000, "mpc2k"),
    ],
)
def test_audio_by_content_whatever_the_name(fmt: str, subtype: str, sr: int, detail: str) -> None:
    data = audio_bytes(fmt, subtype, sr)
    for name in ("sound", "sound.bin", "sound.jpg", "sound.txt"):
        c = sniff_bytes(name, data)
        assert c == Classification("audio"), (name, c)
        assert c.detail == detail


def id3_tag(payload_size: int) -> bytes:
    syncsafe = bytes((payload_size >> s) & 0x7F for s in (21, 14, 7, 0))
    return b"ID3\x04\x00\x00" + syncsafe


def test_mp3_without_id3_tag_by_frame_sync() -> None:
    bare = audio_bytes("MP3", "MPEG_LAYER_III", 44100)
    assert bare[0] == 0xFF  # libsndfile writes no ID3 tag
    assert sniff_bytes("x.bin", bare) == Classification("audio")
    # MPEG-2 layer III at a low rate exercises the other frame-length formula.
    bare16 = audio_bytes("MP3", "MPEG_LAYER_III", 16000)
    assert sniff_bytes("x.bin", bare16) == Classification("audio")


def test_mp3_with_id3_tag() -> None:
    bare = audio_bytes("MP3", "MPEG_LAYER_III", 44100)
    tagged = id3_tag(300) + b"\x00" * 300 + bare
    assert sniff_bytes("x.bin", tagged) == Classification("audio")
    # a tag holding album art that runs past the head
    art = id3_tag(50_000) + random_bytes(50_000) + bare
    assert sniff_bytes("x.bin", art) == Classification("audio")


def test_mp3_with_leading_junk_only_when_named_mp3() -> None:
    bare = audio_bytes("MP3", "MPEG_LAYER_III", 44100)
    data = b"\x00\x01junk" * 10 + bare
    assert sniff_bytes("song.mp3", data) == Classification("audio")
    assert sniff_bytes("blob.bin", data) == Classification("other")


def test_frame_sync_lookalike_is_not_mp3() -> None:
    # A valid-looking first header followed by noise where the next frame should be.
    data = b"\xff\xfb\x90\x64" + random_bytes(3000, seed=5)
    assert sniff_bytes("blob.bin", data).modality != "audio"
    c = sniff_bytes("song.mp3", data)
    assert c.modality == "other" and c.reason == "not audio: unrecognised content"


def test_id3_followed_by_flac() -> None:
    flac = audio_bytes("FLAC", "PCM_16")
    c = sniff_bytes("x.flac", id3_tag(20) + b"\x00" * 20 + flac)
    assert c == Classification("audio") and c.detail == "flac"


def ogg_page(packet: bytes, *, bos: bool = True, serial: int = 1) -> bytes:
    # Checksum left at zero: sniffing does not verify it.
    header = b"OggS\x00" + bytes([0x02 if bos else 0]) + b"\x00" * 8 + struct.pack("<III", serial, 0, 0)
    return header + bytes([1, len(packet)]) + packet


THEORA = b"\x80theora" + b"\x03\x02\x01" + b"\x00" * 30
VORBIS = b"\x01vorbis" + b"\x00" * 22


def test_ogg_theora_is_not_audio() -> None:
    video = ogg_page(THEORA) + random_bytes(400)
    assert sniff_bytes("film.ogv", video) == Classification("other")
    c = sniff_bytes("film.ogg", video)
    assert c.modality == "other" and c.reason == "not audio: Ogg video (theora)"
    # Theora multiplexed with a Vorbis soundtrack is still a video.
    muxed = ogg_page(THEORA, serial=1) + ogg_page(VORBIS, serial=2) + random_bytes(400)
    assert sniff_bytes("film.ogg", muxed).modality == "other"


def test_ogg_codecs() -> None:
    assert sniff_bytes("x.ogg", ogg_page(VORBIS)).detail == "ogg/vorbis"
    flac = sniff_bytes("x.oga", ogg_page(b"\x7fFLAC\x01\x00\x00\x01fLaC" + b"\x00" * 20))
    assert flac == Classification("audio") and flac.detail == "ogg/flac"
    speex = sniff_bytes("x.ogg", ogg_page(b"Speex   1.2" + b"\x00" * 60))
    assert speex.modality == "other" and speex.reason == "unsupported audio format: Ogg/speex"


def test_unsupported_audio_containers_are_reported_by_extension() -> None:
    m4a = struct.pack(">I", 24) + b"ftypM4A \x00\x00\x00\x00M4A mp42" + random_bytes(300)
    c = sniff_bytes("song.m4a", m4a)
    assert c.modality == "other" and c.reason and c.reason.startswith("unsupported audio format: MP4")
    assert sniff_bytes("clip.mp4", m4a) == Classification("other")  # .mp4 claims nothing xmr reads
    adts = b"\xff\xf1\x50\x80" + random_bytes(300)
    assert sniff_bytes("x.aac", adts).reason == "unsupported audio format: AAC (ADTS)"


def test_avi_and_webp_share_riff_but_are_not_wav() -> None:
    avi = b"RIFF" + struct.pack("<I", 1000) + b"AVI LIST" + random_bytes(200)
    assert sniff_bytes("x.wav", avi).reason == "not audio: AVI video"


# --- text --------------------------------------------------------------------------------------

PROSE = "Café society: naïve crème brûlée — “quoted” — and 日本語 too.\n" * 20


@pytest.mark.parametrize(
    ("encoding", "prefix", "detail"),
    [
        ("utf-8", b"", "utf-8"),
        ("utf-8", b"\xef\xbb\xbf", "utf-8-sig"),
        ("utf-16-le", b"\xff\xfe", "utf-16-le"),
        ("utf-16-be", b"\xfe\xff", "utf-16-be"),
        ("utf-32-le", b"\xff\xfe\x00\x00", "utf-32-le"),
        ("utf-32-be", b"\x00\x00\xfe\xff", "utf-32-be"),
    ],
)
def test_unicode_text(encoding: str, prefix: bytes, detail: str) -> None:
    data = prefix + PROSE.encode(encoding)
    for name in ("notes.txt", "notes", "notes.jpg", "notes.wav"):
        c = sniff_bytes(name, data)
        assert c == Classification("text"), (name, c)
        assert c.detail == detail


def test_legacy_8bit_text() -> None:
    data = "Les cafés de Paris: “À bientôt!” — it’s naïve.\n".encode("cp1252") * 5
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    c = sniff_bytes("cafes.txt", data)
    assert c == Classification("text") and c.detail == "cp1252"


def test_head_cut_inside_a_character_is_still_text() -> None:
    data = b"a" + ("é" * 10_000).encode("utf-8")  # the odd first byte puts the cut mid-"é"
    with pytest.raises(UnicodeDecodeError):
        data[:HEAD_BYTES].decode("utf-8")
    assert classify("x.txt", data[:HEAD_BYTES], len(data)) == Classification("text")
    # but a file that really ends mid-character is not valid UTF-8 (read as cp1252 text)
    assert classify("x.txt", data[:HEAD_BYTES], HEAD_BYTES).detail == "cp1252"
    utf16 = b"\xff\xfe" + ("ab" * 5000).encode("utf-16-le")
    assert classify("x.txt", utf16[: HEAD_BYTES - 1], len(utf16)) == Classification("text")


def test_ansi_escape_codes_and_form_feeds_are_text() -> None:
    log = b"\x1b[32mOK\x1b[0m build finished\n\x0cpage two\tcolumn\r\n" * 20
    assert sniff_bytes("build.log", log) == Classification("text")


def test_nul_bytes_make_it_binary() -> None:
    data = b"plain words " * 50 + b"\x00" + b"more words " * 50
    assert sniff_bytes("a.txt", data).reason == "not text: binary content"
    # UTF-16 without a BOM is not recognised (documented limitation)
    assert sniff_bytes("a.txt", "hello world".encode("utf-16-le")).reason == "not text: binary content"


def test_control_characters_make_it_binary() -> None:
    ctrl = bytes(range(1, 9)) + bytes(range(14, 27))
    data = (b"abcdefghij" * 2 + ctrl) * 40  # ~50% control characters, no NUL
    assert sniff_bytes("a.txt", data).reason == "not text: binary content"
    few = b"x" * 990 + b"\x01" * 5  # 0.5%: a stray control character is tolerated
    assert sniff_bytes("a.txt", few) == Classification("text")


def test_empty_and_whitespace() -> None:
    assert sniff_bytes("a.txt", b"\n\n  \n") == Classification("text")
    assert sniff_bytes("a.txt", b"\xef\xbb\xbf") == Classification("text")


# --- the rules ---------------------------------------------------------------------------------


def test_content_wins_over_extension() -> None:
    jpeg = image_bytes("JPEG")
    assert sniff_bytes("photo.dat", jpeg) == Classification("image")
    assert sniff_bytes("photo.txt", jpeg) == Classification("image")  # no reason: it is a fine image
    assert sniff_bytes("notes.jpg", b"Shopping list: eggs, milk.\n") == Classification("text")
    wav = audio_bytes("WAV", "PCM_16")
    assert sniff_bytes("song.png", wav) == Classification("audio")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a.txt", "not text: binary content"),
        ("a.md", "not text: binary content"),
        ("a.jpg", "not an image: unrecognised content"),
        ("a.PNG", "not an image: unrecognised content"),
        ("a.wav", "not audio: unrecognised content"),
        ("a.mp3", "not audio: unrecognised content"),
        ("a.bin", None),
        ("a", None),
        ("a.pyc", None),
    ],
)
def test_binary_garbage(name: str, reason: str | None) -> None:
    c = sniff_bytes(name, random_bytes(4000, seed=7))
    assert c == Classification("other", reason)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("a.wav", "empty file"), ("a.jpg", "empty file"), ("a.txt", "empty file"), ("a.dat", None), ("a", None)],
)
def test_empty_files(name: str, reason: str | None) -> None:
    assert classify(name, b"", 0) == Classification("other", reason)


def test_pdf_is_a_document_whatever_the_name() -> None:
    pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + random_bytes(500)
    for name in ("paper.pdf", "paper.txt", "paper.jpg", "paper"):
        c = sniff_bytes(name, pdf)
        assert c == Classification("text") and c.detail == "pdf", name
    # a .pdf that is not one is reported
    assert sniff_bytes("paper.pdf", random_bytes(500, seed=3)).reason == "not text: binary content"


def test_known_non_media_formats_give_a_helpful_reason() -> None:
    zipped = b"PK\x03\x04" + random_bytes(500)
    assert sniff_bytes("archive.zip", zipped) == Classification("other")
    assert sniff_bytes("a.wav", zipped).reason == "not audio: ZIP archive"


def test_extension_table() -> None:
    assert sniff.EXTENSION_MODALITY[".jpeg"] == "image"
    assert sniff.EXTENSION_MODALITY[".flac"] == "audio"
    assert sniff.EXTENSION_MODALITY[".md"] == "text"
    assert sniff.claimed_modality("X.TIFF") == "image"
    assert sniff.claimed_modality("archive.tar.gz") is None


# --- formats Pillow opens that look like something else -----------------------------------------


def test_ascii_image_formats_are_images_never_text() -> None:
    xpm = (MEDIA / "images/scene.xpm").read_bytes()
    xbm = (MEDIA / "images/glyph.xbm").read_bytes()
    eps = (MEDIA / "images/drawing.eps").read_bytes()
    for data, detail in ((xpm, "xpm"), (xbm, "xbm"), (eps, "eps")):
        for name in ("x", "x.txt", "x.c", "x.ps"):
            c = sniff_bytes(name, data)
            assert c.modality == "image" and c.detail == detail, (name, c)
    # XBM with a leading comment, as X11's bitmap(1) writes it
    assert sniff_bytes("x", b"/* made by hand */\n" + xbm).detail == "xbm"
    # C source that merely defines a width is not an XBM
    assert sniff_bytes("a.h", b"#define BUFFER_width 10\nint x;\n").modality == "text"


def test_eps_without_ghostscript_is_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    eps = (MEDIA / "images/drawing.eps").read_bytes()
    assert sniff_bytes("drawing.eps", eps).skip is None  # gs is installed here (.ci/run installs it)
    monkeypatch.setenv("PATH", str(tmp_path))  # no gs on PATH
    c = sniff_bytes("drawing.eps", eps)
    assert c == Classification("image", None, "eps", "needs Ghostscript")
    # DOS EPS binary header
    assert sniff_bytes("x.eps", b"\xc5\xd0\xd3\xc6" + eps).skip == "needs Ghostscript"


def fli_bytes(magic: int = 0xAF12, frames: int = 1) -> bytes:
    header = bytearray(128)
    struct.pack_into("<IHHHHHHI", header, 0, 0, magic, frames, 32, 16, 8, 3, 70)
    frame = struct.pack("<IHH", 16, 0xF1FA, 0) + b"\x00" * 8
    data = bytes(header) + frame
    return struct.pack("<I", len(data)) + data[4:]


def test_fli_and_flc_animations_are_images_not_audio() -> None:
    for magic in (0xAF11, 0xAF12):
        data = fli_bytes(magic)
        c = sniff_bytes("anim.flc", data)
        assert c == Classification("image") and c.detail == "fli"
        assert sniff_bytes("anim.wav", data).modality == "image"
        with Image.open(io.BytesIO(data)) as img:  # and Pillow agrees
            assert img.format == "FLI"


def bigtiff_bytes(w: int = 8, h: int = 6) -> bytes:
    """A minimal little-endian BigTIFF: one uncompressed 8-bit greyscale strip."""
    pixels = bytes((x * 30 + y * 10) % 256 for y in range(h) for x in range(w))
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
    n = len(entries) + 3
    ifd_at = 16
    data_at = ifd_at + 8 + 20 * n + 8
    entries += [(273, 16, 1, data_at), (278, 3, 1, h), (279, 16, 1, len(pixels))]
    out = b"II+\x00" + struct.pack("<HHQ", 8, 0, ifd_at) + struct.pack("<Q", n)
    for tag, typ, count, value in sorted(entries):
        out += struct.pack("<HHQQ", tag, typ, count, value)
    return out + struct.pack("<Q", 0) + pixels


def test_bigtiff_opens_when_pillow_can(tmp_path: Path) -> None:
    from xmr.preprocess.image import load_image

    data = bigtiff_bytes()
    c = sniff_bytes("scan.tif", data)
    assert c == Classification("image") and c.detail == "bigtiff"
    p = tmp_path / "scan.tif"
    p.write_bytes(data)
    img = load_image(p)
    assert img.size == (8, 6) and img.getpixel((1, 0)) == (30, 30, 30)


def test_camera_raw_goes_to_rawpy_or_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    tiff_like = image_bytes("TIFF")  # NEF, CR2, ARW and DNG are TIFF containers
    c = sniff_bytes("DSC_0001.NEF", tiff_like)
    assert c == Classification("image") and c.detail == "raw"
    assert sniff_bytes("IMG_0001.CR3", struct.pack(">I", 24) + b"ftypcrx " + random_bytes(100)).detail == "raw"
    assert sniff_bytes("x.tif", tiff_like).detail == "tiff"  # only the RAW names go to rawpy
    monkeypatch.setitem(sys.modules, "rawpy", None)  # rawpy not installed
    c = sniff_bytes("DSC_0001.NEF", tiff_like)
    assert c == Classification("image", None, "raw", "camera RAW needs rawpy")


def test_detail_is_not_part_of_equality() -> None:
    assert Classification("image", None, "jpeg") == Classification("image")


# --- classify_path -----------------------------------------------------------------------------


def test_classify_path_reads_only_the_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "big.txt"
    p.write_bytes(b"word " * 100_000)
    seen: list[int] = []
    real = sniff.classify

    def spy(name: str, head: bytes, size: int) -> Classification:
        seen.append(len(head))
        assert size == 500_000 and name == "big.txt"
        return real(name, head, size)

    monkeypatch.setattr(sniff, "classify", spy)
    assert classify_path(p) == Classification("text")
    assert seen == [HEAD_BYTES]


def test_classify_path_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = classify_path(tmp_path / "nope.jpg")
    assert missing == Classification("other", "cannot read: No such file or directory")
    assert classify_path(tmp_path).reason == "cannot read: Is a directory"

    locked = tmp_path / "locked.txt"
    locked.write_text("secret")
    real_open = builtins.open

    def fake_open(file: object, *a: object, **k: object) -> object:
        if os.fspath(file) == str(locked):  # type: ignore[call-overload]
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", fake_open)
    assert classify_path(locked) == Classification("other", "cannot read: Permission denied")


def test_classify_path_bytes_name(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9.txt"
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"hello there\n")
    os.close(fd)
    assert classify_path(raw) == Classification("text")
    assert classify_path(os.fsdecode(raw)) == Classification("text")
