"""Text batches as long as their longest text, not the 77-token context.

Both text towers used to see every text padded to 77 tokens, so a 3-word
concept cost as much as a full passage. Texts are now sorted by token count
and embedded in batches cut to the longest member, which leaves the results
unchanged:

* CLIP reads its output at the end-of-text token under a causal mask: no
  position attends to a later one, so dropping the padding after the batch's
  last end-of-text token changes nothing before it.
* CLAP's RoBERTa reads the first token with an attention mask over padding;
  padding to the batch's longest sequence instead of 77 changes nothing either
  (its position ids count only non-padding tokens).

The tests compare both with the padded path on mixed-length batches
(within 1e-5). Imports torch: backends only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

# a batch of short texts may hold more of them, as long as it has no more
# tokens than a full batch of 77-token texts
MAX_BATCH_GROWTH = 4
LENGTH_SLACK = 8


def length_batches(lengths: Sequence[int], batch_size: int, context: int) -> Iterator[np.ndarray]:
    """Indices of texts in batches of similar length, shortest first.

    A batch holds ``batch_size`` texts, or more short ones (up to
    ``MAX_BATCH_GROWTH`` times as many) while its padded size stays within
    ``batch_size * context`` tokens; a text more than twice as long as the
    batch's first (plus ``LENGTH_SLACK``) starts a new batch, so a few long
    texts do not pad many short ones.
    """
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    budget = max(1, batch_size) * context
    cap = max(1, batch_size) * MAX_BATCH_GROWTH
    start = 0
    while start < len(order):
        end = start + 1
        # sorted ascending: the newest member is the longest, so it sets the padded size
        first = int(lengths[order[start]])
        while end < len(order) and end - start < cap:
            n = int(lengths[order[end]])
            if (end - start + 1) * n > budget or n > 2 * first + LENGTH_SLACK:
                break
            end += 1
        yield order[start:end]
        start = end


def embed_sorted(
    n: int, batches: Iterator[np.ndarray], embed: Callable[[np.ndarray], np.ndarray], dim: int
) -> np.ndarray:
    """Run ``embed`` per batch of indices and put the rows back in input order."""
    out = np.zeros((n, dim), dtype=np.float32)
    for idx in batches:
        out[idx] = embed(idx)
    return out


# ---------------------------------------------------------------------------- CLIP


def _clip_text_parts(model: Any) -> tuple[Any, str, int | None] | None:
    """(module holding the text tower's layers, pool type, eos id) when the tower is
    open_clip's causal text transformer; None for anything else (HF towers,
    bidirectional or class-token towers), which keep the padded path."""
    if hasattr(model, "token_embedding") and hasattr(model, "text_pool_type"):  # open_clip CLIP
        parts, pool, eos = model, model.text_pool_type, getattr(model, "text_eos_id", None)
    else:
        parts = getattr(model, "text", None)
        if parts is None or not hasattr(parts, "token_embedding"):
            return None
        if getattr(parts, "cls_emb", None) is not None or getattr(parts, "use_pad_mask", False):
            return None
        pool, eos = getattr(parts, "pool_type", None), getattr(parts, "eos_id", None)
    if getattr(parts, "attn_mask", None) is None or pool not in ("argmax", "eos"):
        return None
    if pool == "eos" and eos is None:
        return None
    return parts, pool, eos


def clip_pool_positions(tokens: Any, pool: str, eos: int | None) -> Any:
    """Where open_clip's text_global_pool reads each row (argmax or first eos)."""
    if pool == "argmax":
        return tokens.argmax(dim=-1)
    return (tokens == eos).int().argmax(dim=-1)


def _plain_blocks(transformer: Any) -> bool:
    """open_clip's batch-first Transformer of plain ResidualAttentionBlocks (what
    ``last_block_at`` re-implements), run without gradient checkpointing."""
    from open_clip.transformer import ResidualAttentionBlock

    blocks = list(getattr(transformer, "resblocks", ()))
    return (
        bool(blocks)
        and getattr(transformer, "batch_first", False)
        and not getattr(transformer, "grad_checkpointing", False)
        and all(type(b) is ResidualAttentionBlock and not hasattr(b, "ln_1_kv") for b in blocks)
    )


def last_block_at(block: Any, x: Any, rows: Any, pos: Any, mask: Any) -> Any:
    """The last block's output at one position per row, (B, d): the pooled row is all the
    tower reads, so its queries, attention output and MLP run for that row only (about a
    twelfth of a 12-layer tower's matrix work saved), against keys and values of every
    position. Under the causal mask that row attends to positions <= its own, as in the
    full block (``ResidualAttentionBlock.forward``)."""
    kv = block.ln_1(x)
    q = kv[rows, pos][:, None]
    heads = block.attn.num_heads
    row_mask = mask[pos][:, None, :].repeat_interleave(heads, dim=0).to(q.dtype)  # (B*heads, 1, L)
    attn = block.attn(q, kv, kv, need_weights=False, attn_mask=row_mask)[0]
    y = x[rows, pos][:, None] + block.ls_1(attn)
    y = y + block.ls_2(block.mlp(block.ln_2(y)))
    return y[:, 0]


class ClipTextRunner:
    """Embeds CLIP token rows (n, 77) in length-sorted batches cut at their last pooled position."""

    def __init__(self, model: Any):
        self.model = model
        self.parts = _clip_text_parts(model)
        self.pooled_last = self.parts is not None and _plain_blocks(self.parts[0].transformer)

    @property
    def dynamic(self) -> bool:
        return self.parts is not None

    def lengths(self, tokens: Any) -> np.ndarray:
        """Tokens each row needs: up to and including the position the output is read at."""
        if self.parts is None:
            return np.full(len(tokens), tokens.shape[1], dtype=np.int64)
        _, pool, eos = self.parts
        return (clip_pool_positions(tokens, pool, eos) + 1).cpu().numpy().astype(np.int64)

    def features(self, tokens: Any) -> Any:
        """Unnormalised text features of a batch of token rows."""
        import torch

        if self.parts is None:
            return self.model.encode_text(tokens)
        parts, pool, eos = self.parts
        pos = clip_pool_positions(tokens, pool, eos)
        seq = int(pos.max()) + 1
        cast_dtype = parts.transformer.get_cast_dtype()
        x = parts.token_embedding(tokens[:, :seq]).to(cast_dtype)
        x = x + parts.positional_embedding[:seq].to(cast_dtype)
        mask = parts.attn_mask[:seq, :seq]
        rows = torch.arange(x.shape[0], device=x.device)
        if self.pooled_last:
            *blocks, last = parts.transformer.resblocks
            for block in blocks:
                x = block(x, attn_mask=mask)
            x = last_block_at(last, x, rows, pos, mask)
        else:
            x = parts.transformer(x, attn_mask=mask)[rows, pos]
        x = parts.ln_final(x)
        proj = parts.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
        return x


# ---------------------------------------------------------------------------- CLAP


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """(input_ids, attention_mask) of token rows padded on the right to the longest."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask
