"""Text reading and passage splitting (placeholder: being implemented)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Passage:
    text: str
    start: int  # character offset in the decoded, normalised document text
    end: int
