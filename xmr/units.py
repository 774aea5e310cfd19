"""Human-readable quantities, shared by the CLI and the eval report."""

from __future__ import annotations


def human_bytes(n: int | None) -> str:
    """``1536`` -> ``"1.5 KB"``; ``None`` -> ``"-"`` (binary units, capped at GB)."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
