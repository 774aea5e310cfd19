"""OpenCLIP's ``SimpleTokenizer`` without torch, for the ONNX query towers.

open_clip's ``tokenizer`` module imports torch at the top (seconds), yet the
tokenizer itself is pure Python. This is the same algorithm over the same
vocabulary file (``bpe_simple_vocab_16e6.txt.gz`` shipped inside open_clip,
found without importing it), returning numpy arrays; the tests check it
token-for-token against open_clip's own on a varied corpus.

Only the default configuration is reproduced (``clean='lower'``, no
additional special tokens, no reduction mask): the one every built-in CLIP
architecture without a Hugging Face tokenizer uses.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np

from xmr.encoders import bpe, string_table
from xmr.encoders.string_table import PairTable, StringTable

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
SPECIAL = ("<start_of_text>", "<end_of_text>")


def default_vocab() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / VOCAB_FILE


# printable ASCII, tab and newline, without "&": text that ftfy.fix_text and html.unescape return
# unchanged (tests/test_towers.py checks it), so a plain query skips importing ftfy (30-80 ms)
_PLAIN = re.compile(r"[\t\n\x20-\x25\x27-\x7e]*")


# the pattern below on ASCII text once cleaned (the only whitespace left is " "): \p{L} is
# [A-Za-z] there and \p{N} [0-9], so ``re`` splits it the same (tests/test_towers.py checks it)
_ASCII_PAT = re.compile(
    "|".join(SPECIAL) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[A-Za-z]+|[0-9]|[^\sA-Za-z0-9]+"""
)


def _clean(text: str) -> str:
    if not _PLAIN.fullmatch(text):
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    text = text.strip()
    return " ".join(text.split()).strip().lower()


def _build_tables(path: Path) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The vocabulary (token -> id) and the merge ranks ("first second" -> rank), packed."""
    merges = gzip.open(path).read().decode("utf-8").split("\n")
    merges = merges[1 : 49152 - 256 - 2 + 1]
    merge_pairs = [m.split() for m in merges]
    vocab = list(bpe.bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab.extend("".join(m) for m in merge_pairs)
    vocab.extend(SPECIAL)
    # the first of duplicate keys would win here, the last in a dict: the file has none
    if len(set(vocab)) != len(vocab) or any(len(m) != 2 for m in merge_pairs):
        raise ValueError(f"{path}: unexpected vocabulary (duplicate tokens or malformed merges)")
    return string_table.pack(vocab), string_table.pack([" ".join(m) for m in merge_pairs])


def _valid(t: Any) -> bool:
    return (
        isinstance(t, tuple)
        and len(t) == 2
        and all(string_table.valid(x) for x in t)
        and len(t[0][3]) == len(t[1][3]) + 4 * (512 + len(SPECIAL))  # offsets: one more than keys
    )


def _tables(path: Path, cache_dir: Path | None) -> tuple[StringTable, PairTable]:
    """The vocabulary and merge ranks, from their cached copy when there is one (read in place:
    no dict is built, 40-60 ms of a cold query)."""
    vocab, merges = bpe.cached_tables(path, cache_dir, "clip-bpe-table", lambda: _build_tables(path), _valid)
    return StringTable(vocab), PairTable(StringTable(merges))


class ClipTokenizer:
    """``open_clip.tokenizer.SimpleTokenizer()`` as numpy: ids of shape (n, context_length)."""

    def __init__(
        self, vocab_path: str | Path | None = None, context_length: int = 77, *, cache_dir: Path | None = None
    ) -> None:
        path = Path(vocab_path) if vocab_path else default_vocab()
        self.encoder, self.bpe_ranks = _tables(path, cache_dir)
        self.cache: dict[str, str] = {t: t for t in SPECIAL}
        self._pat: Any = None
        self.sot, self.eot = self.encoder[SPECIAL[0]], self.encoder[SPECIAL[1]]
        self.context_length = context_length
        self._byte_encoder = bpe.bytes_to_unicode()

    def _bpe(self, token: str) -> str:
        if token not in self.cache:
            self.cache[token] = " ".join(bpe.merge((*token[:-1], token[-1] + "</w>"), self.bpe_ranks))
        return self.cache[token]

    @property
    def pat(self) -> Any:
        """open_clip's pre-tokenizer pattern (the ``regex`` module: 30 ms to import)."""
        if self._pat is None:
            import regex

            self._pat = regex.compile(
                "|".join(SPECIAL) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                regex.IGNORECASE,
            )
        return self._pat

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without the start/end tokens."""
        ids: list[int] = []
        text = _clean(text)
        for token in (_ASCII_PAT if text.isascii() else self.pat).findall(text):
            token = "".join(self._byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(token).split(" "))
        return ids

    def __call__(self, texts: list[str]) -> np.ndarray:
        n = self.context_length
        out = np.zeros((len(texts), n), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self.sot, *self.encode(text), self.eot]
            if len(tokens) > n:
                tokens = tokens[:n]
                tokens[-1] = self.eot
            out[row, : len(tokens)] = tokens
        return out
