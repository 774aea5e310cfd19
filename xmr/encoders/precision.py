"""Numeric precision of the encoders on CPU: fp32, bf16 or int8.

``--precision`` / ``XMR_PRECISION`` chooses it; fp32 is the default. On CPU,
``bf16`` runs the models under bfloat16 autocast and ``int8`` replaces their
Linear layers with dynamically quantised ones (int8 weights, activations
quantised per batch: ``torch.ao.quantization.quantize_dynamic``). CUDA keeps
its fp16 and MPS its fp32 whatever is asked. CLIP's image tower at int8 is the
exception: it runs as an ONNX Runtime int8 model (xmr.encoders.tower_quant,
faster than torch's int8 here), whichever engine indexes; so is CLAP's audio
tower, which runs as the fp32 ONNX model (xmr.encoders.image_int8 says why).

Vectors made at another precision are different vectors: the precision is part
of the model id (``clip:ViT-B-32:tag@int8``; fp32 and the device defaults add
nothing, so existing indexes keep their ids), so re-indexing at another
precision re-embeds, as a model change does, and a search can tell when its
query was embedded at another precision than the index.

The functions without torch in their body import nothing heavy. This module sits low:
it imports only xmr.encoders.device and xmr.errors (xmr.settings checks names with it).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from xmr.encoders.device import cpu_without_torch, resolve_device
from xmr.errors import UsageError

PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT = "fp32"
_SEP = "@"
# Linear layers left in fp32 at int8: the heads that make the final vector (CLAP's
# RoBERTa pooler and projections); a fraction of the compute, most of the error
_KEEP_FP32 = re.compile(r"(^|\.)(pooler|text_projection|audio_projection)(\.|$)")


def check(name: str | None) -> str | None:
    """A valid precision name (lower-cased), None for "not chosen", or a UsageError."""
    if name is None or not str(name).strip():
        return None
    p = str(name).strip().lower()
    if p not in PRECISIONS:
        hint = f"choose {', '.join(PRECISIONS)} (--precision / XMR_PRECISION)"
        raise UsageError(f"unknown precision {name!r}", hint=hint)
    return p


def on_device(requested: str | None, device_type: str) -> str:
    """What the encoder actually runs at: the request on CPU, fp16 on CUDA, fp32 on MPS."""
    if device_type == "cuda":
        return "fp16"
    if device_type != "cpu":
        return DEFAULT
    return check(requested) or DEFAULT


def tag_model_id(model_id: str, precision: str) -> str:
    """The model id vectors of this precision are recorded under."""
    return model_id if precision in (DEFAULT, "fp16") else f"{model_id}{_SEP}{precision}"


def of_model_id(model_id: str | None) -> str:
    """The precision a model id was recorded at (fp32 or the device default when untagged)."""
    if model_id and _SEP in model_id:
        tail = model_id.rsplit(_SEP, 1)[1]
        if tail in PRECISIONS:
            return tail
    return DEFAULT


def base_model_id(model_id: str) -> str:
    """The model id without its precision tag."""
    return model_id.rsplit(_SEP, 1)[0] if of_model_id(model_id) != DEFAULT else model_id


def expected_tag(requested: str | None, device: str) -> str:
    """The precision a run with these settings records, decided before any model loads.

    Only an explicit non-fp32 request on an ``auto`` device needs torch (is CUDA there?).
    """
    p = check(requested) or DEFAULT
    if p == DEFAULT:
        return DEFAULT
    dev = (device or "auto").strip().lower()
    if dev == "auto":
        if cpu_without_torch("auto"):  # no sign of a GPU: the CPU, without importing torch
            dev = "cpu"
        else:
            dev = resolve_device("auto").type
    kind = "cuda" if dev.startswith("cuda") else dev
    eff = on_device(p, kind)
    return DEFAULT if eff == "fp16" else eff


# ----------------------------------------------------------------------- torch side


def apply(model: Any, precision: str, *, exclude: tuple[str, ...] = ()) -> Any:
    """The model to run at ``precision`` (int8: Linear layers dynamically quantised, but for
    those under the submodules named in ``exclude``)."""
    if precision != "int8":
        return model
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    # per-channel weight scales; the small output heads stay fp32. Measured on
    # random-weight CLAP: per-tensor everything gave audio cosine 0.9938 to fp32,
    # this gives 0.9996 (audio) and 0.9991 (text)
    spec = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        # exactly Linear: MultiheadAttention's out_proj (a subclass) must stay as it is
        if type(module) is torch.nn.Linear
        and not _KEEP_FP32.search(name)
        and not any(name == top or name.startswith(top + ".") for top in exclude)
    }
    # torch warns that torch.ao.quantization is deprecated in favour of torchao; its
    # dynamic int8 Linear kernels are what we measured (benchmarks/precision.py)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    for module in model.modules():
        if isinstance(module, DynamicLinear):
            # open_clip asks a block's Linear for its weight dtype (the input cast); a
            # quantised Linear's weight is a method, and this is open_clip's hook for int8 layers
            module.int8_original_dtype = torch.float32
    return model


def autocast(precision: str) -> contextlib.AbstractContextManager[Any]:
    """Context to run a forward pass in (bf16: CPU autocast to bfloat16)."""
    if precision != "bf16":
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)
