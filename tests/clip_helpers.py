"""Helpers for the CLIP backend tests: random-weight models and fake caches.

Nothing here downloads: architectures are built by open_clip with random
weights, and "Hugging Face caches" are folders laid out the way
huggingface_hub stores files (models--ORG--REPO/{refs,snapshots,blobs}).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

REVISION = "0123456789abcdef0123456789abcdef01234567"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(8 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_random_clip(arch: str = "ViT-B-32", seed: int = 0, **kwargs: Any) -> tuple[Any, Any]:
    """(model in eval mode, open_clip's own eval transform) with random weights."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None, **kwargs)
    model.eval()
    return model, preprocess


def put_in_hf_cache(cache: Path, repo: str, filename: str, source: Path, *, blob: str | None = None) -> Path:
    """Place ``source`` in a Hugging Face cache as ``repo``/``filename`` (main revision).

    The blob is a hard link (no copy of big weights), named ``blob`` (e.g. the
    file's sha256, as for real LFS files) or the file name; the snapshot entry
    is a relative symlink to it, as huggingface_hub makes them.
    """
    folder = cache / ("models--" + repo.replace("/", "--"))
    blobs, snap = folder / "blobs", folder / "snapshots" / REVISION
    blobs.mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION)
    target = blobs / (blob or filename)
    if not target.exists():
        try:
            os.link(source, target)
        except OSError:
            target.symlink_to(source)
    entry = snap / filename
    if not entry.exists():
        entry.symlink_to(os.path.relpath(target, entry.parent))
    return entry


def make_fake_hf_text_repo(cache: Path, repo: str = "xlm-roberta-base") -> Path:
    """A tiny stand-in for an HF text model repo: XLM-R config + word-level tokenizer.

    Enough for open_clip's HF text tower (AutoConfig + AutoModel.from_config)
    and HFTokenizer (AutoTokenizer) to work offline from the cache.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig

    words = (
        "<s> <pad> </s> <unk> a photo of the cat dog un une photo chat chien ein foto der katze hund gato perro"
    ).split()
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    folder = cache / ("models--" + repo.replace("/", "--"))
    snap = folder / "snapshots" / REVISION
    snap.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION)
    fast.save_pretrained(snap)
    XLMRobertaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=80,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    ).save_pretrained(snap)
    return snap
