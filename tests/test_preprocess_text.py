"""Reading text (encodings, binary detection, limits), normalisation and
passage splitting (offsets, token budget with CLIP's real tokenizer, overlap)."""

from __future__ import annotations

import codecs
import random
from pathlib import Path

import pytest

from xmr.errors import MediaError
from xmr.preprocess.text import Passage, decode_text, normalise, read_text, split_passages

SAMPLE = "Grüße aus Köln – “quoted” café, naïve façade. Ελληνικά, русский, 日本語 ✓ 🎉\nsecond line\ttab"
LATIN = "café – “quoted” façade, 12 €"  # all in cp1252


# ----------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    "encoded",
    [
        SAMPLE.encode("utf-8"),
        codecs.BOM_UTF8 + SAMPLE.encode("utf-8"),
        codecs.BOM_UTF16_LE + SAMPLE.encode("utf-16-le"),
        codecs.BOM_UTF16_BE + SAMPLE.encode("utf-16-be"),
        codecs.BOM_UTF32_LE + SAMPLE.encode("utf-32-le"),
        codecs.BOM_UTF32_BE + SAMPLE.encode("utf-32-be"),
        SAMPLE.encode("utf-16"),  # Python's own BOM + native order
    ],
    ids=["utf8", "utf8-bom", "utf16le-bom", "utf16be-bom", "utf32le-bom", "utf32be-bom", "utf16"],
)
def test_unicode_encodings(tmp_path: Path, encoded: bytes) -> None:
    p = tmp_path / "t.txt"
    p.write_bytes(encoded)
    assert read_text(p) == SAMPLE


def test_utf16_without_bom() -> None:
    text = "plain ASCII text saved as UTF-16 without a byte order mark\n" * 3
    assert decode_text(text.encode("utf-16-le")) == text
    assert decode_text(text.encode("utf-16-be")) == text


def test_legacy_single_byte_fallbacks(tmp_path: Path) -> None:
    p = tmp_path / "cp1252.txt"
    p.write_bytes(LATIN.encode("cp1252"))
    assert read_text(p) == LATIN
    # 0x81 is undefined in cp1252: latin-1 takes over rather than failing
    legacy = "Äpfel und Birnen, " * 10
    assert decode_text(legacy.encode("latin-1") + b"\x81") == legacy + "\x81"


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        b"text with a NUL\x00 inside",
        random.Random(3).randbytes(4096),
        b"\x01\x02\x03\x04 mostly control \x05\x06\x07\x08\x0e\x0f\x10\x11" * 20,
        codecs.BOM_UTF16_LE + "\x00\x01\x02\x03\x04binary".encode("utf-16-le") * 10,
        bytes([0, 1, 0, 2, 0, 3, 0, 4]) * 64,  # little 16-bit integers, not UTF-16 text
    ],
    ids=["png", "nul", "random", "controls", "utf16-controls", "int16"],
)
def test_binary_content_is_rejected(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "blob.txt"
    p.write_bytes(data)
    with pytest.raises(MediaError) as info:
        read_text(p)
    assert info.value.reason == "not text: binary content" and info.value.path == str(p)


def test_text_with_a_few_control_characters_is_still_text() -> None:
    log = "\x1b[31mERROR\x1b[0m something failed\r\n" * 50 + "page\x0cbreak"
    assert decode_text(log.encode()) == log


def test_limits_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "big.txt"
    p.write_text("é" * 100, encoding="utf-8")  # 200 bytes
    assert read_text(p, max_bytes=51) == "é" * 25  # the cut-off half character is dropped
    assert read_text(p, max_bytes=None) == "é" * 100
    p16 = tmp_path / "big16.txt"
    p16.write_bytes(codecs.BOM_UTF16_LE + ("ab" * 50).encode("utf-16-le"))
    assert read_text(p16, max_bytes=2 + 21) == "ab" * 5
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert read_text(empty) == ""
    with pytest.raises(MediaError, match="no such file"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(MediaError, match="is a directory"):
        read_text(tmp_path)


# ------------------------------------------------------------- normalisation


def test_normalise() -> None:
    assert normalise("  Cafe\u0301  \n\n\t au\u00a0lait \r\n ") == "Café au lait"
    assert normalise("a\x00b\x07c\x1b[0m d") == "abc[0m d"
    assert normalise("") == ""
    assert normalise(" \n\t ") == ""
    assert normalise("line\u2028sep\x85next") == "line sep next"
    once = normalise(SAMPLE)
    assert normalise(once) == once  # idempotent


# ------------------------------------------------------------------ passages


def simple_count(text: str) -> int:
    return len(text.split())


def check_passages(text: str, passages: list[Passage], count, max_tokens: int) -> None:  # noqa: ANN001
    assert passages, "no passages"
    for p in passages:
        assert text[p.start : p.end] == p.text
        assert p.text == p.text.strip() and p.text
        assert count(p.text) <= max_tokens
    assert passages[0].start == 0 and passages[-1].end == len(text)
    for a, b in zip(passages, passages[1:], strict=False):
        assert a.start < b.start and a.end < b.end
        assert b.start <= a.end or text[a.end : b.start].strip() == ""  # no word is skipped


def test_split_offsets_budget_and_overlap() -> None:
    text = normalise(" ".join(f"w{i}" for i in range(100)))
    passages = split_passages(text, simple_count, max_tokens=10, overlap_tokens=3)
    check_passages(text, passages, simple_count, 10)
    assert all(simple_count(p.text) == 10 for p in passages[:-1])  # greedy: full windows
    for a, b in zip(passages, passages[1:], strict=False):
        assert simple_count(text[b.start : a.end]) == 3  # exactly the overlap
    no_overlap = split_passages(text, simple_count, max_tokens=10, overlap_tokens=0)
    assert len(no_overlap) == 10 and [p.text.split()[0] for p in no_overlap][:3] == ["w0", "w10", "w20"]
    assert split_passages("", simple_count, 10, 2) == []
    assert split_passages("one", simple_count, 10, 2) == [Passage("one", 0, 3)]
    with pytest.raises(ValueError):
        split_passages(text, simple_count, max_tokens=5, overlap_tokens=5)
    with pytest.raises(ValueError):
        split_passages(text, simple_count, max_tokens=0)


def test_split_with_the_real_clip_tokenizer() -> None:
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()

    def count(s: str) -> int:
        return len(tok.encode(s))

    rnd = random.Random(0)
    vocab = [
        "the",
        "cat",
        "sat",
        "on",
        "mat,",
        "photograph",
        "of",
        "a",
        "Zürich",
        "東京タワー",
        "émigré",
        "don't",
        "x86_64",
        "https://example.org/path?q=1",
        "(parenthesis)",
        "well-known",
        "3.14159",
        "🎉",
    ]
    text = normalise(" ".join(rnd.choice(vocab) for _ in range(3000)) + " " + "a" * 900 + " tail")
    passages = split_passages(text, count, max_tokens=75, overlap_tokens=16)
    check_passages(text, passages, count, 75)
    assert max(count(p.text) for p in passages) >= 70  # windows are filled, not tiny
    overlaps = [count(text[b.start : a.end]) for a, b in zip(passages, passages[1:], strict=False) if b.start < a.end]
    assert len(overlaps) >= len(passages) // 2 and max(overlaps) <= 16
    # the 900-character "word" was cut into pieces that each fit
    assert sum("a" * 50 in p.text for p in passages) >= 2


def test_split_is_efficient_on_a_megabyte() -> None:
    rnd = random.Random(1)
    vocab = [f"word{i}" for i in range(5000)]
    text = normalise(" ".join(rnd.choice(vocab) for _ in range(115_000)))
    assert len(text) > 1_000_000
    calls = 0

    def count(s: str) -> int:
        nonlocal calls
        calls += 1
        return len(s.split()) + s.count("1")  # not one token per word: budgets differ per word

    passages = split_passages(text, count, max_tokens=75, overlap_tokens=16)
    counted = calls
    check_passages(text, passages, count, 75)
    # the cost is the token counter (a real tokenizer): one call per distinct word plus about
    # one per window, not one per (window, word)
    assert counted <= 5000 + 2 * len(passages)
