"""``xmr search --preview``: the results' pictures inline, after the table (see ``xmr.preview``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from xmr import preview
from xmr.errors import XmrError


def show_previews(results: Sequence[Any]) -> None:
    """Write each result's thumbnail to the terminal on stdout; a plain note where it cannot show any."""
    out = sys.stdout
    if not out.isatty():
        return  # never escape sequences into a pipe
    protocol = preview.detect(os.environ, True)
    if protocol is None:
        sys.stderr.write(
            "xmr: --preview: this terminal shows no inline images (kitty, Ghostty, iTerm2 and WezTerm do; "
            "XMR_PREVIEW=kitty|iterm forces one)\n"
        )
        return
    out.flush()
    for i, r in enumerate(results, 1):
        source = preview.thumbnail_source(r)
        if source is None:
            continue
        try:
            png = preview.thumbnail_png(source)
        except (XmrError, OSError, ValueError) as exc:
            out.write(f"{i}. {os.path.basename(r.path)}: no preview ({exc})\n")
            continue
        out.write(f"{i}. {os.path.basename(r.path)}\n")
        out.flush()
        out.buffer.write(preview.encode(protocol, png) + b"\n")
        out.buffer.flush()
