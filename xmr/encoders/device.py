"""Device selection shared by the backends (imports torch: backends only)."""

from __future__ import annotations

from typing import Any

from xmr.errors import DeviceError


def resolve_device(requested: str) -> Any:
    """Map auto|cpu|cuda[:N]|mps to a torch.device, or raise DeviceError."""
    import torch

    req = (requested or "auto").strip().lower()
    if req == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if req == "cpu":
        return torch.device("cpu")
    if req.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {requested!r} requested but CUDA is not available", hint="use --device cpu")
        return torch.device(req)
    if req == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise DeviceError("device 'mps' requested but MPS is not available", hint="use --device cpu")
        return torch.device("mps")
    raise DeviceError(f"unknown device {requested!r}", hint="choose auto, cpu, cuda, cuda:N or mps")


def use_half(device: Any) -> bool:
    """fp16 weights and inputs on CUDA only; CPU and MPS stay fp32."""
    return getattr(device, "type", str(device)) == "cuda"
