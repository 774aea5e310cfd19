"""CLAP's RoBERTa tokenizer through the ``tokenizers`` library alone.

The CLAP backend tokenizes with transformers' ``RobertaTokenizer`` (importing
transformers costs about a second). Its fast backend is a ``tokenizers``
object, which the tower export saves as JSON next to the ONNX file; loading
that JSON here gives the very same ids without transformers. The tests check
the ids against the backend's tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class RobertaTokenizer:
    """ids and attention mask as laion-clap tokenizes: padded to ``max_length``, truncated."""

    def __init__(self, tokenizer_json: str | Path, max_length: int = 77) -> None:
        from tokenizers import Tokenizer

        self._json = Path(tokenizer_json).read_text(encoding="utf-8")
        self._tok = Tokenizer.from_str(self._json)
        self._counter: Any = None  # built on first count_tokens: a query never counts (0.15 s saved)
        self.pad_id = int(self._tok.token_to_id("<pad>"))
        self._tok.enable_truncation(max_length)
        self._tok.enable_padding(length=max_length, pad_id=self.pad_id, pad_token="<pad>")

    def __call__(self, texts: list[str]) -> dict[str, Any]:
        enc = self._tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": mask}

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without <s> and </s>."""
        if self._counter is None:
            from tokenizers import Tokenizer

            self._counter = Tokenizer.from_str(self._json)
            self._counter.no_truncation()
            self._counter.no_padding()
        return len(self._counter.encode(text, add_special_tokens=False).ids)


def save_backend_tokenizer(hf_tokenizer: Any, target: Path) -> None:
    """Write a transformers tokenizer's ``tokenizers`` backend as JSON."""
    target.write_text(hf_tokenizer.backend_tokenizer.to_str(), encoding="utf-8")
