"""Export each encoder tower to its own ONNX file (the torch side of :mod:`xmr.encoders.towers`).

Runs once per checkpoint: the full model is built through its backend (the
same code, weights and checks as indexing), each tower is wrapped in a small
module computing exactly what the backend computes before normalisation,
exported with torch's TorchScript-based ONNX exporter, optimised by ONNX
Runtime to a portable level, and verified against torch on probe inputs. Only
then is the folder moved into place, so a half-written tower is never used.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from xmr.encoders.towers import (
    FORMAT,
    MAX_EXPORT_DIFF,
    TowerUnsupported,
    onnx_version,
    tower_dir,
)

OPSET = 17


def export_towers(encoder: Any, towers: list[str], *, root: Path | None = None) -> dict[str, Path]:
    """Export ``towers`` of a loaded backend encoder; returns tower -> folder.

    Raises TowerUnsupported for models the query engine does not cover
    (they keep using the backend at query time).
    """
    out = {}
    for tower in towers:
        target = tower_dir(encoder.info.model_id, encoder.info.checkpoint_sha256, tower, root=root)
        if (target / "manifest.json").is_file():
            out[tower] = target
            continue
        wrapper, probes, extra = _wrap(encoder, tower)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{tower}-", dir=target.parent))
        try:
            _export_one(wrapper, probes, tmp, tower=tower, encoder=encoder, extra=extra)
            try:
                os.replace(tmp, target)
            except OSError:  # another process finished first
                if not (target / "manifest.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
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

            class ClipText(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.m = model

                def forward(self, tokens: Any) -> Any:
                    return self.m.encode_text(tokens)

            texts = ["a photo of a dog", "", "rain on a tin roof " * 12]
            probes = {"tokens": tok(texts).numpy()}
            return ClipText(), probes, {"context_length": int(tok.context_length or 77)}
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

            from xmr.encoders.clap import CONTEXT_LENGTH

            tok = encoder._tokenizer(
                ["a dog barking", "", "rain " * 100],
                padding="max_length",
                truncation=True,
                max_length=CONTEXT_LENGTH,
                return_tensors="np",
            )
            probes = {"input_ids": tok["input_ids"].astype(np.int64), "attention_mask": tok["attention_mask"]}
            probes["attention_mask"] = probes["attention_mask"].astype(np.int64)
            return ClapText(), probes, {"context_length": CONTEXT_LENGTH, "_hf_tokenizer": encoder._tokenizer}
        if tower == "audio":
            if encoder.arch.enable_fusion:
                raise TowerUnsupported("fusion CLAP checkpoints use the backend directly")

            class ClapAudio(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.m = model

                def forward(self, waveform: Any) -> Any:
                    longer = torch.zeros((waveform.shape[0], 1), dtype=torch.bool)
                    feats = self.m.encode_audio({"waveform": waveform, "longer": longer}, device="cpu")["embedding"]
                    return self.m.audio_projection(feats)

            from xmr.preprocess.audio import WINDOW_SAMPLES

            rng = np.random.default_rng(0)
            # HTS-AT's window partition bakes the batch size into the graph: export and run one window at a time
            probes = {"waveform": (rng.standard_normal((1, WINDOW_SAMPLES)) * 0.1).astype(np.float32)}
            return ClapAudio(), probes, {"batch": 1}
    raise TowerUnsupported(f"no {tower} tower in the {space} space")


def _export_one(
    wrapper: Any, probes: dict[str, np.ndarray], tmp: Path, *, tower: str, encoder: Any, extra: dict[str, Any]
) -> None:
    import onnxruntime as ort
    import torch

    wrapper.eval()
    names = list(probes)
    args = tuple(torch.from_numpy(probes[n]) for n in names)
    dynamic = {} if extra.get("batch") == 1 else {n: {0: "batch"} for n in names}
    raw = tmp / "raw.onnx"
    # nn.MultiheadAttention's inference fast path is a fused op the exporter does not know
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shapes the graph fixes, by design
            expected = wrapper(*args).float().numpy()
            torch.onnx.export(
                wrapper,
                args,
                str(raw),
                input_names=names,
                output_names=["embedding"],
                dynamic_axes={**dynamic, **({"embedding": {0: "batch"}} if dynamic else {})},
                opset_version=OPSET,
                dynamo=False,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    # Optimise once, to a level whose graph is portable across CPUs, and keep the
    # weights in a separate file that ONNX Runtime maps instead of parsing.
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp / "model.onnx")
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "model.data")
    so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(raw), so, providers=["CPUExecutionProvider"])
    for leftover in tmp.glob("raw.onnx*"):
        leftover.unlink()
    sess = ort.InferenceSession(str(tmp / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, probes)[0]
    diff = float(np.max(np.abs(_unit(got) - _unit(expected))))
    if not np.isfinite(diff) or diff > MAX_EXPORT_DIFF:
        raise TowerUnsupported(f"the exported {tower} tower differs from torch by {diff:.2e}")
    manifest = {
        "format": FORMAT,
        "model_id": encoder.info.model_id,
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
    for p in tmp.iterdir():
        os.chmod(p, 0o600)
    os.chmod(tmp, 0o700)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
