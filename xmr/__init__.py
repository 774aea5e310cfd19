"""xmr: cross-modal retrieval over local folders of text, images and audio."""

from __future__ import annotations

__version__ = "0.1.0"
