"""Export each encoder tower to its own ONNX file (the torch side of :mod:`xmr.encoders.towers`).

Runs once per checkpoint: the full model is built through its backend (the
same code, weights and checks as indexing), each tower is wrapped in a small
module computing exactly what the backend computes before normalisation,
exported with torch's TorchScript-based ONNX exporter, optimised by ONNX
Runtime to a portable level, and verified against torch on probe inputs. Only
then is the folder moved into place, so a half-written tower is never used.

An ``xmr index`` run pays for this once per model, so each step is done once:
the exported bytes go to ONNX Runtime in memory (parsed once, optimised once,
written once); the written file is verified as the query engine loads it; the
torch side of the check is one forward (the text towers' padded backend path
over the probes' distinct rows) or none beyond the trace itself (image and
audio towers, whose traced module is the backend's own).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from xmr.encoders.tower_files import (
    FORMAT,
    MAX_EXPORT_DIFF,
    TowerUnsupported,
    onnx_version,
    staging,
    tower_dir,
)

OPSET = 17


def export_towers(
    encoder: Any, towers: list[str], *, root: Path | None = None, model_id: str | None = None
) -> dict[str, Path]:
    """Export ``towers`` of a loaded backend encoder; returns tower -> folder.

    ``model_id`` keys the export when it is not the encoder's own (its fp32 id, for an
    encoder at int8 whose image tower is still fp32). Raises TowerUnsupported for
    models the query engine does not cover (they keep using the backend at query time).
    """
    out = {}
    model_id = model_id or encoder.info.model_id
    for tower in towers:
        target = tower_dir(model_id, encoder.info.checkpoint_sha256, tower, root=root)
        if (target / "manifest.json").is_file():
            out[tower] = target
            continue
        wrapper, probes, extra = _wrap(encoder, tower)
        with staging(target) as tmp:
            _export_one(wrapper, probes, tmp, tower=tower, encoder=encoder, extra={**extra, "model_id": model_id})
        out[tower] = target
    return out


def _wrap(encoder: Any, tower: str) -> tuple[Any, dict[str, np.ndarray], dict[str, Any]]:
    """(torch module, probe inputs, manifest extras) for one tower."""
    import torch

    space = encoder.space
    if getattr(encoder, "half", False) or getattr(encoder, "_half", False):
        raise TowerUnsupported("fp16 models use the backend directly")
    if space == "clip":
        model = encoder._model
        if tower == "text":
            tok = encoder._tokenizer
            if type(tok).__name__ != "SimpleTokenizer" or getattr(tok, "reduction_fn", None) is not None:
                raise TowerUnsupported(f"{type(tok).__name__} tokenizers are not reproduced without torch")
            if getattr(getattr(tok, "clean_fn", None), "__name__", "_clean_lower") != "_clean_lower":
                raise TowerUnsupported("only the default ('lower') CLIP text cleaning is reproduced")

            from xmr.encoders.textbatch import _clip_text_parts

            texts = ["a photo of a dog", "", "rain on a tin roof " * 12]
            full = tok(texts).numpy()
            extra: dict[str, Any] = {"context_length": int(tok.context_length or 77)}
            found = _clip_text_parts(model)
            if found is None:  # not open_clip's causal text transformer: the padded graph

                class ClipText(torch.nn.Module):
                    def __init__(self) -> None:
                        super().__init__()
                        self.m = model

                    def forward(self, tokens: Any) -> Any:
                        return self.m.encode_text(tokens)

                return ClipText(), {"tokens": full}, extra
            parts, pool, eos = found

            class ClipTextDynamic(torch.nn.Module):
                """encode_text on rows cut after their last pooled position (see textbatch):
                the sequence length is an input dimension, so a short query pays for its tokens only."""

                def __init__(self) -> None:
                    super().__init__()
                    self.p = parts

                def forward(self, tokens: Any) -> Any:
                    seq = tokens.shape[1]
                    pos = tokens.argmax(dim=-1) if pool == "argmax" else (tokens == eos).int().argmax(dim=-1)
                    cast_dtype = self.p.transformer.get_cast_dtype()
                    x = self.p.token_embedding(tokens).to(cast_dtype)
                    x = x + self.p.positional_embedding[:seq].to(cast_dtype)
                    x = self.p.transformer(x, attn_mask=self.p.attn_mask[:seq, :seq])
                    x = self.p.ln_final(x)
                    x = x[torch.arange(x.shape[0]), pos]
                    proj = self.p.text_projection
                    if proj is not None:
                        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
                    return x

            extra.update({"dynamic_length": True, "pool": pool, "eos_id": eos})
            # traced on the two short rows (a trace's forward costs what its tokens do), verified
            # against the backend at other lengths and batch sizes, the full context included (_export_one)
            probes = {"tokens": np.ascontiguousarray(full[:2, : clip_cut(full[:2], pool, eos)])}
            first = {"tokens": np.ascontiguousarray(full[:1, : clip_cut(full[:1], pool, eos)])}
            return ClipTextDynamic(), probes, {**extra, "_verify": [probes, {"tokens": full}, first]}
        if tower == "image":

            class ClipImage(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.v = model.visual

                def forward(self, pixels: Any) -> Any:
                    return self.v(pixels)

            h, w = encoder.image_preprocessor().size
            rng = np.random.default_rng(0)
            probes = {"pixels": rng.standard_normal((2, 3, h, w)).astype(np.float32)}
            return ClipImage(), probes, {"preprocess": encoder.image_preprocessor().describe()}
    if space == "clap":
        model = encoder.model
        if tower == "text":

            class ClapText(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.b, self.p = model.text_branch, model.text_projection

                def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                    return self.p(self.b(input_ids=input_ids, attention_mask=attention_mask)["pooler_output"])

            from xmr.encoders.passages import CLAP_CONTEXT_LENGTH as CONTEXT_LENGTH

            tok = encoder._tokenizer(
                ["a dog barking", "", "rain " * 100],
                padding="max_length",
                truncation=True,
                max_length=CONTEXT_LENGTH,
                return_tensors="np",
            )
            full = {"input_ids": tok["input_ids"].astype(np.int64), "attention_mask": tok["attention_mask"]}
            full["attention_mask"] = full["attention_mask"].astype(np.int64)
            # traced on the two short rows padded to the longer, verified padded to 77 and unpadded: the
            # length is an input dimension, and padding to a batch's longest changes nothing under the mask
            width = int(full["attention_mask"][:2].sum(axis=1).max())
            probes = {k: np.ascontiguousarray(v[:2, :width]) for k, v in full.items()}
            short = {k: v[:1, : int(full["attention_mask"][0].sum())] for k, v in full.items()}
            extra = {"context_length": CONTEXT_LENGTH, "_hf_tokenizer": encoder._tokenizer, "dynamic_length": True}
            return ClapText(), probes, {**extra, "_verify": [probes, full, short]}
        if tower == "audio":
            if encoder.arch.enable_fusion:
                raise TowerUnsupported("fusion CLAP checkpoints use the backend directly")

            class ClapAudio(torch.nn.Module):
                """CLAP.encode_audio and the projection, holding the audio modules only: at int8 the
                text tower is quantised, and quantised modules make the exporter trace more than once."""

                def __init__(self) -> None:
                    super().__init__()
                    self.b, self.p = model.audio_branch, model.audio_projection

                def forward(self, waveform: Any) -> Any:
                    longer = torch.zeros((waveform.shape[0], 1), dtype=torch.bool)
                    feats = self.b({"waveform": waveform, "longer": longer}, mixup_lambda=None, device="cpu")
                    return self.p(feats["embedding"])

            from xmr.preprocess.audio import WINDOW_SAMPLES

            rng = np.random.default_rng(0)
            # HTS-AT's window partition bakes the batch size into the graph: export and run one window at a time
            probes = {"waveform": (rng.standard_normal((1, WINDOW_SAMPLES)) * 0.1).astype(np.float32)}
            # what the index engine records for the model without building it (xmr.encoders.engine)
            info = {"name": encoder.info.name, "pretrained": encoder.info.pretrained}
            info["preprocessing"] = encoder.info.preprocessing
            return ClapAudio(), probes, {"batch": 1, "window_samples": WINDOW_SAMPLES, "model_info": info}
    raise TowerUnsupported(f"no {tower} tower in the {space} space")


def _export_one(
    wrapper: Any, probes: dict[str, np.ndarray], tmp: Path, *, tower: str, encoder: Any, extra: dict[str, Any]
) -> None:
    import io

    import onnxruntime as ort
    import torch

    wrapper.eval()
    names = list(probes)
    args = tuple(torch.from_numpy(probes[n]) for n in names)
    dynamic = {} if extra.get("batch") == 1 else {n: {0: "batch"} for n in names}
    if extra.get("dynamic_length"):
        dynamic = {n: {0: "batch", 1: "sequence"} for n in names}
    verify = extra.pop("_verify", [])
    raw = io.BytesIO()  # handed to ONNX Runtime as bytes: never written, parsed once
    # nn.MultiheadAttention's inference fast path is a fused op the exporter does not know
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    mha_forward = torch.nn.MultiheadAttention.forward
    if extra.get("dynamic_length"):
        # its slow path traces the sequence length as a constant; the same attention in
        # shape-agnostic ops keeps it an input dimension (verified against the backend below)
        torch.nn.MultiheadAttention.forward = _self_attention  # type: ignore[method-assign]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shapes the graph fixes, by design
            if verify:
                # the backend's padded path is the reference for every probe (see textbatch),
                # the traced ones included: one torch forward over their distinct rows
                checks = list(zip(verify, _references(encoder, verify), strict=True))
            # Tracing runs the wrapper on the probes for real: where the wrapper is the backend's
            # own computation (image, audio) its output is the reference, kept without a second forward.
            traced: list[np.ndarray] = []
            hook = wrapper.register_forward_hook(lambda _m, _a, out: traced.append(out.detach().float().numpy().copy()))
            try:
                torch.onnx.export(
                    wrapper,
                    args,
                    raw,
                    input_names=names,
                    output_names=["embedding"],
                    dynamic_axes={**dynamic, **({"embedding": {0: "batch"}} if dynamic else {})},
                    opset_version=OPSET,
                    # ONNX Runtime folds the same constants below (same node count): folding twice cost seconds
                    do_constant_folding=False,
                    dynamo=False,
                )
            finally:
                hook.remove()
            if not verify:
                if len(traced) != 1:
                    raise TowerUnsupported(f"the {tower} tower's trace ran {len(traced)} times")
                checks = [(probes, traced[0])]
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        torch.nn.MultiheadAttention.forward = mha_forward  # type: ignore[method-assign]
    # Optimise once, to a level whose graph is portable across CPUs, and keep the
    # weights in a separate file that ONNX Runtime maps instead of parsing.
    so = _session_options(ort)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp / "model.onnx")
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "model.data")
    so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(raw.getvalue(), so, providers=["CPUExecutionProvider"])
    del raw
    # verified as the query engine loads it (towers._Tower): the written file, not optimised again
    so = _session_options(ort)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(tmp / "model.onnx"), so, providers=["CPUExecutionProvider"])
    diff = 0.0
    for feeds, want in checks:
        got = sess.run(None, feeds)[0]
        diff = max(diff, float(np.max(np.abs(_unit(got) - _unit(want)))))
    if not np.isfinite(diff) or diff > MAX_EXPORT_DIFF:
        raise TowerUnsupported(f"the exported {tower} tower differs from torch by {diff:.2e}")
    manifest = {
        "format": FORMAT,
        "model_id": extra.pop("model_id", encoder.info.model_id),
        "space": encoder.space,
        "tower": tower,
        "checkpoint_sha256": encoder.info.checkpoint_sha256,
        "dim": int(encoder.dim),
        "inputs": names,
        "export_max_diff": diff,
        "onnxruntime": onnx_version(),
        "torch": torch.__version__,
    }
    hf_tok = extra.pop("_hf_tokenizer", None)
    if hf_tok is not None:
        from xmr.encoders.roberta_tokenizer import save_backend_tokenizer

        save_backend_tokenizer(hf_tok, tmp / "tokenizer.json")
        manifest["tokenizer"] = "tokenizer.json"
    manifest.update(extra)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")


def _session_options(ort: Any) -> Any:
    """Options for the export's own sessions: weights not pre-packed (each session runs a few
    probes only) and no spinning worker threads."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.disable_prepacking", "1")
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def _self_attention(
    self: Any,
    query: Any,
    key: Any,
    value: Any,
    key_padding_mask: Any = None,
    need_weights: bool = True,
    attn_mask: Any = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[Any, None]:
    """nn.MultiheadAttention.forward for self-attention without weights, in reshapes that
    leave the batch and sequence sizes to the graph (used only while exporting)."""
    import torch
    import torch.nn.functional as F

    if not (query is key is value) or key_padding_mask is not None or not self._qkv_same_embed_dim:
        raise TowerUnsupported("only plain self-attention is exported with dynamic lengths")
    x = query if self.batch_first else query.transpose(0, 1)  # (batch, seq, embed)
    heads, embed = self.num_heads, self.embed_dim
    head_dim = embed // heads
    qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
    qkv = qkv.reshape(x.shape[0], -1, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (batch, heads, seq, head_dim)
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / head_dim**0.5)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        scores = scores.masked_fill(attn_mask, float("-inf"))
    elif attn_mask is not None:
        scores = scores + attn_mask
    out = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(x.shape[0], -1, embed)
    out = self.out_proj(out)
    return (out if self.batch_first else out.transpose(0, 1)), None


def clip_cut(tokens: np.ndarray, pool: str, eos: int | None) -> int:
    """Columns of CLIP token rows up to the last position any row is read at."""
    return int(clip_positions(tokens, pool, eos).max()) + 1


def clip_positions(tokens: np.ndarray, pool: str, eos: int | None) -> np.ndarray:
    """Where open_clip's text pooling reads each row (numpy twin of textbatch.clip_pool_positions)."""
    return tokens.argmax(axis=-1) if pool == "argmax" else (tokens == eos).argmax(axis=-1)


def _references(encoder: Any, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """What the backend's padded path gives for the rows of each of ``feeds``: its text
    encoder on the full context, in one forward over the distinct padded rows."""
    import torch

    from xmr.encoders.passages import CLAP_CONTEXT_LENGTH

    if encoder.space == "clip":
        ctx, fill = int(encoder._tokenizer.context_length or 77), {"tokens": 0}
    else:
        ctx, fill = CLAP_CONTEXT_LENGTH, {"input_ids": int(encoder._tokenizer.pad_token_id), "attention_mask": 0}
    padded = []
    for f in feeds:
        rows = {}
        for name, value in f.items():
            full = np.full((len(value), ctx), fill[name], dtype=np.int64)
            full[:, : value.shape[1]] = value
            rows[name] = full
        padded.append(rows)
    names = list(fill)
    # a row keyed by all its inputs' bytes: probes cut from the same texts pad back to the same row
    keys = [[b"".join(p[n][i].tobytes() for n in names) for i in range(len(p[names[0]]))] for p in padded]
    where: dict[bytes, tuple[int, int]] = {}  # distinct row -> (feed, row) it was first seen at
    for j, ks in enumerate(keys):
        for i, k in enumerate(ks):
            where.setdefault(k, (j, i))
    at = {k: n for n, k in enumerate(where)}
    batch = {n: torch.from_numpy(np.stack([padded[j][n][i] for j, i in where.values()])) for n in names}
    with torch.no_grad():
        if encoder.space == "clip":
            out = encoder._model.encode_text(batch["tokens"]).float().numpy()
        else:
            m = encoder.model
            hidden = m.text_branch(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            out = m.text_projection(hidden["pooler_output"]).float().numpy()
    return [out[[at[k] for k in ks]] for ks in keys]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
