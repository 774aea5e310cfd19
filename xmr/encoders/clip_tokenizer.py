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

import numpy as np

from xmr.encoders import bpe

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


def _clean(text: str) -> str:
    if not _PLAIN.fullmatch(text):
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    text = text.strip()
    return " ".join(text.split()).strip().lower()


def _build_tables(path: Path) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    merges = gzip.open(path).read().decode("utf-8").split("\n")
    merges = merges[1 : 49152 - 256 - 2 + 1]
    merge_pairs = [tuple(m.split()) for m in merges]
    vocab = list(bpe.bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab.extend("".join(m) for m in merge_pairs)
    vocab.extend(SPECIAL)
    return {t: i for i, t in enumerate(vocab)}, {p: i for i, p in enumerate(merge_pairs)}  # type: ignore[misc]


def _tables(path: Path, cache_dir: Path | None) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """The vocabulary and merge ranks, from their cached copy when there is one."""
    return bpe.cached_tables(
        path,
        cache_dir,
        "clip-bpe",
        lambda: _build_tables(path),
        lambda t: isinstance(t, tuple) and len(t) == 2 and len(t[0]) == len(t[1]) + 512 + len(SPECIAL),
    )


class ClipTokenizer:
    """``open_clip.tokenizer.SimpleTokenizer()`` as numpy: ids of shape (n, context_length)."""

    def __init__(
        self, vocab_path: str | Path | None = None, context_length: int = 77, *, cache_dir: Path | None = None
    ) -> None:
        import regex

        path = Path(vocab_path) if vocab_path else default_vocab()
        self.encoder, self.bpe_ranks = _tables(path, cache_dir)
        self.cache: dict[str, str] = {t: t for t in SPECIAL}
        self.pat = regex.compile(
            "|".join(SPECIAL) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self.sot, self.eot = self.encoder[SPECIAL[0]], self.encoder[SPECIAL[1]]
        self.context_length = context_length
        self._byte_encoder = bpe.bytes_to_unicode()

    def _bpe(self, token: str) -> str:
        if token not in self.cache:
            self.cache[token] = " ".join(bpe.merge((*token[:-1], token[-1] + "</w>"), self.bpe_ranks))
        return self.cache[token]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without the start/end tokens."""
        ids: list[int] = []
        for token in self.pat.findall(_clean(text)):
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
