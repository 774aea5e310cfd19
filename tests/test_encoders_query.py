"""xmr.encoders.query.QueryEncoders: the public query-encoder holder search and the server share."""

from __future__ import annotations

from typing import Any

from xmr.encoders.query import QueryEncoders
from xmr.settings import Settings


class _Index:
    """An index whose clip space was built at int8 and whose clap space is empty."""

    def __init__(self) -> None:
        self.rows_read: list[str] = []

    def active_model(self, space: str) -> str | None:
        return {"clip": "clip:ViT-B-32:tag@int8"}.get(space)

    def model_row(self, model_id: str) -> dict[str, Any] | None:
        self.rows_read.append(model_id)
        return None


def test_the_query_model_id_is_the_index_model_at_the_precision_asked_for() -> None:
    assert QueryEncoders(_Index(), Settings()).query_model_id("clip") == "clip:ViT-B-32:tag@int8"
    assert QueryEncoders(_Index(), Settings(precision="bf16")).query_model_id("clip") == "clip:ViT-B-32:tag@bf16"
    assert QueryEncoders(_Index(), Settings(precision="fp32")).query_model_id("clip") == "clip:ViT-B-32:tag"
    assert QueryEncoders(_Index(), Settings()).query_model_id("clap") == ""


def test_a_precision_other_than_the_index_is_noted_once() -> None:
    enc = QueryEncoders(_Index(), Settings())
    enc.note_precision("clip", "int8")
    assert enc.notes == []
    enc.note_precision("clip", "fp32")
    enc.note_precision("clip", "fp32")
    assert len(enc.notes) == 1 and "built at int8" in enc.notes[0] and "embedded at fp32" in enc.notes[0]


def test_search_and_the_server_hold_the_same_class() -> None:
    from xmr import search
    from xmr.server import state

    assert search.QueryEncoders is QueryEncoders
    assert state.QueryEncoders is QueryEncoders
    assert not hasattr(search, "_Encoders")
