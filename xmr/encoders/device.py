"""Device selection shared by the backends.

``cpu_without_torch`` decides from the file system alone; the other functions
import torch in their bodies (backends only). This module imports nothing of
xmr but its errors, so settings and precision can sit on top of it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from xmr.errors import DeviceError


def cpu_without_torch(device: str | None) -> bool:
    """Whether ``device`` is surely the CPU, decided without importing torch (auto on a
    machine that may have a GPU is left to the backend)."""
    d = (device or "auto").strip().lower()
    if d == "cpu":
        return True
    if d != "auto" or sys.platform == "darwin":  # auto on a Mac may be MPS
        return False
    # NVIDIA's driver, ROCm's kernel driver, WSL's GPU device: torch may find a GPU there
    signs = ("/proc/driver/nvidia/version", "/dev/kfd", "/dev/dxg")
    return not (any(Path(p).exists() for p in signs) or shutil.which("nvidia-smi"))


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
