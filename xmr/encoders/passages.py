"""How each text tower cuts a text into passages: one rule for a backend and its ONNX query tower.

A query text file must be cut as the indexer cut the indexed ones, whichever
engine embeds it, so the token limits live here, below both
(:mod:`xmr.encoders.clip`, :mod:`xmr.encoders.clap`, :mod:`xmr.encoders.towers`).
"""

from __future__ import annotations

from collections.abc import Callable

from xmr.preprocess.text import Passage, normalise, split_passages

CLIP_PASSAGE_OVERLAP_TOKENS = 16
CLAP_CONTEXT_LENGTH = 77  # laion-clap tokenizes with max_length=77, incl. <s> and </s>
CLAP_TEXT_MAX_TOKENS = CLAP_CONTEXT_LENGTH - 2
CLAP_TEXT_OVERLAP_TOKENS = 15


def clip_passages(text: str, count_tokens: Callable[[str], int], limit: int) -> list[Passage]:
    """Passages of normalise(text) of at most ``limit`` CLIP tokens (the context less start/end)."""
    return split_passages(normalise(text), count_tokens, limit, min(CLIP_PASSAGE_OVERLAP_TOKENS, limit // 4))


def clap_passages(text: str, count_tokens: Callable[[str], int]) -> list[Passage]:
    """Passages of at most 75 RoBERTa tokens (77 with <s> and </s>)."""
    return split_passages(text, count_tokens, CLAP_TEXT_MAX_TOKENS, CLAP_TEXT_OVERLAP_TOKENS)
