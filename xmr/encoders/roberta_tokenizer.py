"""CLAP's RoBERTa tokenizer without transformers, and for plain text without loading ``tokenizers``.

The CLAP backend tokenizes with transformers' ``RobertaTokenizer`` (importing
transformers costs about a second). Its fast backend is a ``tokenizers``
object, which the tower export saves as JSON next to the ONNX file; loading
that JSON gives the very same ids without transformers, but parsing it costs
0.1 s of every cold query. So ASCII text, nearly every typed query, is
tokenized here: GPT-2's byte-level BPE over the same vocabulary and merges,
read from the JSON once and kept as a marshal copy beside it. Other text, and
a tokenizer JSON configured in any way this path does not reproduce, goes to
``tokenizers``. The tests check the ids of both paths against the backend and
fuzz the ASCII path against ``tokenizers``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from xmr.encoders import bpe

# GPT-2's pre-tokenizer, as tokenizers' ByteLevel(use_regex=True) applies it
_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}


def _python_tables(data: dict[str, Any]) -> dict[str, Any] | None:
    """What the ASCII path needs, or None when this tokenizer is set up in a way it does not reproduce."""
    model, pre, post = data.get("model") or {}, data.get("pre_tokenizer") or {}, data.get("post_processor") or {}
    plain_bpe = (
        model.get("type") == "BPE"
        and model.get("dropout") is None
        and not model.get("continuing_subword_prefix")
        and not model.get("end_of_word_suffix")
        and not model.get("byte_fallback")
        and not model.get("ignore_merges")
    )
    if not plain_bpe or data.get("normalizer") is not None or {k: pre.get(k) for k in _BYTE_LEVEL} != _BYTE_LEVEL:
        return None
    if post.get("type") != "RobertaProcessing" or post.get("add_prefix_space"):
        return None
    added = data.get("added_tokens") or []
    if any(not t.get("special") or t.get("lstrip") or t.get("rstrip") or t.get("single_word") for t in added):
        return None
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return {
        "vocab": dict(model["vocab"]),
        "ranks": {m: i for i, m in enumerate(merges)},
        "special": {t["content"]: int(t["id"]) for t in added},
        "cls": int(post["cls"][1]),
        "sep": int(post["sep"][1]),
    }


class RobertaTokenizer:
    """ids and attention mask as laion-clap tokenizes: padded to ``max_length``, truncated."""

    def __init__(self, tokenizer_json: str | Path, max_length: int = 77) -> None:
        self._path = Path(tokenizer_json)
        self.max_length = max_length
        self._rust: Any = None  # the tokenizers object, parsed when a text needs it
        self._counter: Any = None
        tables = bpe.cached_tables(
            self._path,
            self._path.parent,
            f".{self._path.stem}",
            self._read_tables,
            lambda t: t is False or (isinstance(t, dict) and "<pad>" in t.get("vocab", {})),
        )
        self._tables: dict[str, Any] | None = tables or None
        if self._tables is not None:
            import regex

            special = sorted(self._tables["special"], key=len, reverse=True)  # longest first, as tokenizers matches
            self._split = regex.compile("(" + "|".join(map(regex.escape, special)) + ")") if special else None
            self._pre = regex.compile(_PATTERN)
            self._bpe_cache: dict[str, list[int]] = {}
            self.pad_id = int(self._tables["vocab"]["<pad>"])
        else:
            self.pad_id = int(self._tokenizer().token_to_id("<pad>"))

    def _read_tables(self) -> dict[str, Any] | bool:
        return _python_tables(json.loads(self._path.read_text(encoding="utf-8"))) or False

    def _tokenizer(self) -> Any:
        if self._rust is None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self._path))
            pad = int(tok.token_to_id("<pad>"))
            tok.enable_truncation(self.max_length)
            tok.enable_padding(length=self.max_length, pad_id=pad, pad_token="<pad>")
            self._rust = tok
        return self._rust

    def _ascii_ids(self, text: str) -> list[int] | None:
        """Ids without <s> and </s>, or None where the vocabulary lacks a merged piece."""
        t = self._tables
        assert t is not None
        vocab, ranks, byte_enc = t["vocab"], t["ranks"], bpe.bytes_to_unicode()
        ids: list[int] = []
        pieces = self._split.split(text) if self._split is not None else [text]
        for n, piece in enumerate(pieces):
            if n % 2:  # a special token, matched in the raw text
                ids.append(t["special"][piece])
                continue
            for word in self._pre.findall(piece):
                if word not in self._bpe_cache:
                    chars = tuple(byte_enc[b] for b in word.encode("ascii"))
                    merged = bpe.merge(chars, ranks)
                    if any(m not in vocab for m in merged):
                        return None
                    self._bpe_cache[word] = [vocab[m] for m in merged]
                ids.extend(self._bpe_cache[word])
        return ids

    def __call__(self, texts: list[str]) -> dict[str, Any]:
        n = self.max_length
        ids = np.full((len(texts), n), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), n), dtype=np.int64)
        for row, text in enumerate(texts):
            body = self._ascii_ids(text) if self._tables is not None and text.isascii() else None
            if body is None:
                enc = self._tokenizer().encode(text)
                ids[row], mask[row] = enc.ids, enc.attention_mask
                continue
            tokens = [self._tables["cls"], *body[: n - 2], self._tables["sep"]]  # type: ignore[index]
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without <s> and </s>."""
        if self._tables is not None and text.isascii():
            body = self._ascii_ids(text)
            if body is not None:
                return len(body)
        if self._counter is None:
            from tokenizers import Tokenizer

            self._counter = Tokenizer.from_file(str(self._path))
            self._counter.no_truncation()
            self._counter.no_padding()
        return len(self._counter.encode(text, add_special_tokens=False).ids)


def save_backend_tokenizer(hf_tokenizer: Any, target: Path) -> None:
    """Write a transformers tokenizer's ``tokenizers`` backend as JSON."""
    target.write_text(hf_tokenizer.backend_tokenizer.to_str(), encoding="utf-8")
