"""Which OCR mode an index run uses: ``--ocr auto|all|off``, kept for later runs.

``auto`` (the default) reads images the gate (xmr.ocr.gate) finds likely to hold text, and
every page of a PDF without a text layer; ``all`` reads every image; ``off`` none. A mode
given to ``xmr index`` (or XMR_OCR) is recorded in the catalogue's settings and kept by later
runs that give none, as ``--codes`` is.
"""

from __future__ import annotations

import os
from typing import Any

from xmr.errors import UsageError
from xmr.ocr.record import MODES

OCR_SETTING = "ocr_mode"


def check_mode(value: str | None) -> str | None:
    """The mode, lower-cased, or None; UsageError for anything else."""
    if value is None or not value.strip():
        return None
    v = value.strip().lower()
    if v not in MODES:
        raise UsageError(f"--ocr / XMR_OCR: {value!r} is not one of {', '.join(MODES)}")
    return v


def mode_from_env() -> str | None:
    return check_mode(os.environ.get("XMR_OCR"))


def choose_mode(cat: Any, requested: str | None) -> str:
    """The run's mode: the one asked for (or XMR_OCR; recorded), else the recorded one, else auto."""
    mode = check_mode(requested) or mode_from_env()
    if mode is None:
        return check_mode(cat.get_setting(OCR_SETTING)) or "auto"
    if cat.get_setting(OCR_SETTING) != mode:
        with cat.transaction():
            cat.set_setting(OCR_SETTING, mode)
    return mode
