"""Inline image previews in terminals that can show pictures (``xmr search --preview``).

Two protocols, chosen from the environment (no terminal query, no reply to wait for):

* the **kitty graphics protocol** (kitty, Ghostty): ``ESC _G a=T,f=100,q=2,m=1;<base64> ESC \\``,
  the PNG in base64 chunks of at most 4096 bytes, every chunk but the last with ``m=1``,
  the last with ``m=0``; only the first carries the keys (``a=T`` transmit and show,
  ``f=100`` PNG, ``q=2`` no reply from the terminal, which would land in the shell's input);
* **iTerm2 inline images** (iTerm2, WezTerm): ``ESC ]1337;File=inline=1;size=N:<base64> BEL``.

Sixel is not spoken. Inside tmux or screen (which need passthrough wrapping) and
in any other terminal the caller falls back to the plain table. ``XMR_PREVIEW``
(``kitty``, ``iterm``, ``none``) overrides the detection, never the tty check:
nothing is ever written into a pipe.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

KITTY = "kitty"
ITERM = "iterm"
PROTOCOLS = (KITTY, ITERM)
KITTY_CHUNK = 4096  # the protocol's largest chunk of base64 (a multiple of 4)
THUMB_PX = 192  # about 10 rows of a common terminal font


def detect(env: Mapping[str, str], isatty: bool) -> str | None:
    """The inline-image protocol this terminal speaks, or None (also for anything not a tty)."""
    if not isatty:
        return None
    forced = env.get("XMR_PREVIEW", "").strip().lower()
    if forced in PROTOCOLS:
        return forced
    if forced in ("none", "off", "0", "no"):
        return None
    term = env.get("TERM", "")
    if env.get("TMUX") or term.startswith(("screen", "tmux")):
        return None  # the multiplexer would swallow (or garble) the escape sequences
    if env.get("TERM_PROGRAM") in ("iTerm.app", "WezTerm") or env.get("LC_TERMINAL") == "iTerm2":
        return ITERM
    if term in ("xterm-kitty", "xterm-ghostty") or env.get("KITTY_WINDOW_ID"):
        return KITTY
    return None


def kitty(png: bytes) -> bytes:
    """``png`` as kitty graphics protocol escape sequences (transmit and display at the cursor)."""
    data = base64.standard_b64encode(png)
    chunks = [data[i : i + KITTY_CHUNK] for i in range(0, len(data), KITTY_CHUNK)] or [b""]
    out = []
    for i, chunk in enumerate(chunks):
        more = 0 if i == len(chunks) - 1 else 1
        keys = f"a=T,f=100,q=2,m={more}" if i == 0 else f"m={more}"
        out.append(b"\x1b_G" + keys.encode() + b";" + chunk + b"\x1b\\")
    return b"".join(out)


def iterm(png: bytes) -> bytes:
    """``png`` as an iTerm2 inline image (OSC 1337)."""
    return b"\x1b]1337;File=inline=1;size=%d:" % len(png) + base64.standard_b64encode(png) + b"\x07"


def encode(protocol: str, png: bytes) -> bytes:
    if protocol == KITTY:
        return kitty(png)
    if protocol == ITERM:
        return iterm(png)
    raise ValueError(f"unknown preview protocol {protocol!r}")


def thumbnail_source(result: Any) -> str | None:
    """The picture a result's preview is made from (None: nothing to show).

    An image result shows itself. A result that names its own picture (``thumbnail``:
    the frame a video result matched at, once video is indexed) shows that.
    """
    own = getattr(result, "thumbnail", None)
    if own:
        return str(own)
    if getattr(result, "modality", None) == "image":
        return str(result.path)
    return None


def thumbnail_png(path: str, size: int = THUMB_PX) -> bytes:
    """A PNG of at most ``size`` x ``size`` pixels of the image at ``path`` (EXIF-upright)."""
    from xmr.preprocess.image import load_image

    img = load_image(path, target_size=(size, size))
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "PNG")
    return buf.getvalue()
