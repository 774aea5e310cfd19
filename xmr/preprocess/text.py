"""Reading text files and splitting them into passages an encoder can take.

Pure functions, no model needed: the encoder supplies its own token counter.
Offsets in a ``Passage`` refer to the *normalised* document text, so
``text[p.start:p.end] == p.text`` always holds for ``text = normalise(raw)``.
"""

from __future__ import annotations

import codecs
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from xmr.errors import MediaError
from xmr.preprocess import read_capped

DEFAULT_MAX_TEXT_BYTES = 16 * 1024 * 1024  # bytes beyond this are not read (and not indexed)

# share of control characters (other than whitespace) above which bytes are data, not text
_MAX_CONTROL_RATIO = 0.01
_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# control characters that do not occur in text (tab, newlines, form feed, ESC
# for ANSI colours in logs, and the separators \x1c-\x1f are allowed)
_BINARY_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1a\x7f-\x9f]")
# what normalise() drops: controls that are not whitespace (\x85, NEL, is a line break)
_DROPPED_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")
_WS = re.compile(r"\s+")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Passage:
    text: str
    start: int  # character offset in the decoded, normalised document text
    end: int


def _looks_binary(text: str) -> bool:
    if "\x00" in text:
        return True
    if not text:
        return False
    limit = _MAX_CONTROL_RATIO * len(text)
    controls = 0
    for _ in _BINARY_CONTROL.finditer(text):
        controls += 1
        if controls > limit:
            return True
    return False


def _decode_prefix(data: bytes, encoding: str, truncated: bool) -> str:
    """Strict decode; when the read stopped at max_bytes, drop a cut-off last character."""
    if not truncated:
        return data.decode(encoding)
    decoder = codecs.getincrementaldecoder(encoding)()
    return decoder.decode(data, final=False)


def _utf16_without_bom(data: bytes) -> str | None:
    # Many NULs, all on one byte lane: UTF-16 text saved without a BOM.
    if len(data) < 4:
        return None
    even, odd = data[0::2], data[1::2]
    pairs = len(data) // 2
    for zeros, other, enc in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
        if zeros.count(0) >= 0.9 * pairs and other.count(0) == 0:
            return enc
    return None


def decode_text(data: bytes, *, truncated: bool = False) -> str:
    """Bytes -> str: BOMs, then UTF-8, then cp1252/latin-1 when the bytes look like text.

    Raises MediaError (without a path) for binary content.
    """
    failure: MediaError | None = None
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                text = _decode_prefix(data[len(bom) :], enc, truncated)
            except UnicodeDecodeError as exc:
                # FF FE 00 00 is UTF-32's BOM or UTF-16's followed by NUL: try the next
                failure = MediaError(f"cannot decode text: invalid {enc} data at byte {exc.start + len(bom)}")
                continue
            if _looks_binary(text):
                raise MediaError("not text: binary content")
            return text
    if failure is not None:
        raise failure
    if b"\x00" in data:
        enc = _utf16_without_bom(data)
        if enc is not None:
            try:
                text = _decode_prefix(data[: len(data) // 2 * 2], enc, truncated)
            except UnicodeDecodeError:
                raise MediaError("not text: binary content") from None
            if not _looks_binary(text):
                return text
        raise MediaError("not text: binary content")
    try:
        text = _decode_prefix(data, "utf-8", truncated)
    except UnicodeDecodeError:
        # legacy single-byte text; cp1252 leaves 5 bytes undefined, latin-1 none
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    if _looks_binary(text):
        raise MediaError("not text: binary content")
    return text


def read_text(path: str | os.PathLike[str], *, max_bytes: int | None = DEFAULT_MAX_TEXT_BYTES) -> str:
    """Read and decode a text file (not normalised). Only the first ``max_bytes`` are read."""
    data, truncated = read_capped(path, max_bytes)
    try:
        return decode_text(data, truncated=truncated)
    except MediaError as exc:
        raise MediaError(exc.reason, path=path) from None


def normalise(text: str) -> str:
    """Unicode NFC, every run of whitespace -> one space, stripped.

    Control characters that are not whitespace are dropped.
    """
    text = _DROPPED_CONTROL.sub("", unicodedata.normalize("NFC", text))
    return _WS.sub(" ", text).strip()


def _split_long_word(
    text: str, start: int, end: int, count: Callable[[str], int], max_tokens: int
) -> list[tuple[int, int]]:
    """Cut one over-long "word" (a URL, base64, CJK without spaces) into pieces that fit.

    Each piece is found by galloping from the previous piece's length and a
    coarse bisection (pieces may be a few percent short of full), so a long
    run costs a handful of tokenizer calls per piece on short strings.
    """
    pieces: list[tuple[int, int]] = []
    guess = 4 * max_tokens  # characters; then the length of the previous piece
    while start < end:
        lo = start + 1  # one character always goes, so this terminates
        hi = min(end, start + guess)
        while count(text[start:hi]) <= max_tokens:
            lo = hi
            if hi == end:
                break
            hi = min(end, start + (hi - start) * 5 // 4 + 1)
        else:
            while hi - lo > max(1, (lo - start) // 32):
                mid = (lo + hi) // 2
                if count(text[start:mid]) <= max_tokens:
                    lo = mid
                else:
                    hi = mid
        pieces.append((start, lo))
        guess = max(1, lo - start)
        start = lo
    return pieces


def split_passages(
    text: str,
    count_tokens: Callable[[str], int],
    max_tokens: int,
    overlap_tokens: int = 0,
) -> list[Passage]:
    """Greedy word windows of at most ``max_tokens`` tokens, consecutive ones sharing
    about ``overlap_tokens`` tokens.

    Tokens are counted once per distinct word (so a 1 MB document costs a few
    tens of thousands of tokenizer calls, not millions); each window is then
    checked with one more call, because tokenizers are not always additive.
    ``text`` should be normalised; offsets are into ``text`` as given.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError("overlap_tokens must be >= 0 and smaller than max_tokens")

    cache: dict[str, int] = {}

    def count(s: str) -> int:
        n = cache.get(s)
        if n is None:
            n = cache[s] = count_tokens(s)
        return n

    spans: list[tuple[int, int]] = []  # units: words, or pieces of words too long for one window
    for m in _WORD.finditer(text):
        s, e = m.span()
        if count(text[s:e]) > max_tokens:
            spans.extend(_split_long_word(text, s, e, count_tokens, max_tokens))
        else:
            spans.append((s, e))
    if not spans:
        return []
    costs = [max(1, count(text[s:e])) for s, e in spans]

    n = len(spans)

    def window_end(i: int) -> int:
        """Exclusive end index of the greedy window that starts at unit i."""
        j, total = i, 0
        while j < n and total + costs[j] <= max_tokens:
            total += costs[j]
            j += 1
        j = max(j, i + 1)
        # the window as one string may tokenize differently: shrink until it fits
        while j > i + 1 and count_tokens(text[spans[i][0] : spans[j - 1][1]]) > max_tokens:
            j -= 1
        return j

    passages: list[Passage] = []
    i, j = 0, window_end(0)
    while True:
        start, end = spans[i][0], spans[j - 1][1]
        passages.append(Passage(text[start:end], start, end))
        if j >= n:
            break
        # step back so the next window repeats the last ~overlap_tokens tokens
        k, back = j, 0
        while k - 1 > i and back + costs[k - 1] <= overlap_tokens:
            k -= 1
            back += costs[k]
        next_j = window_end(k) if k < j else j
        if next_j <= j:  # the overlap leaves no room for the next unit: start afresh
            k, next_j = j, window_end(j)
        i, j = k, next_j
    return passages
