"""What an ``xmr index`` run prepares at its end, with its models still loaded, for the first search.

A search embeds its query with per-tower ONNX encoders (:mod:`xmr.encoders.towers`),
exported once per checkpoint from the backend model. Exported by the first search,
that cost a newcomer's first query half a minute (loading torch and both models
again); the index run has those models in memory already, so it exports them
here. A search that still finds them missing (an index made by an older xmr, an
export that failed) says so in one line and prepares them itself.

Only the text towers are exported here: every text search needs both, and a
first search is a text search. The image and audio towers serve image and audio
queries only; exporting them here would cost every first index run (and a small
photos-only run, which the index engine keeps from exporting the image tower)
their time for queries that may never come, so the first such query prepares
its tower, saying so in one line.

The bridge concepts are not embedded here: a search embeds them when a bridged
route is first needed, through the same fast encoders, cached per model
(:func:`xmr.bridge.concept_matrix`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from xmr.settings import Settings

# the towers a first (text) search needs; the others are exported by their first query
PREPARED_AT_INDEX = ("text",)


def prepare_query_towers(
    cat: Any, encoders: Mapping[str, Any], settings: Settings, phase: Callable[[str, int | None], None]
) -> list[tuple[str, str]]:
    """Export the missing query towers of the active models this run has loaded, with those
    models; returns the (space, tower) pairs exported. Failures are left to the first search."""
    from xmr.encoders import towers
    from xmr.encoders.query import model_info, uses_query_towers

    done: list[tuple[str, str]] = []
    for space in sorted(encoders):
        enc = encoders[space]
        model_id = cat.active_model(space)
        if not model_id or model_id != enc.info.model_id:
            continue
        row = cat.model_row(model_id)
        if not uses_query_towers(space, row, settings):
            continue
        info = model_info(row)
        probe = towers.OnnxQueryEncoder(space, info)
        missing = [t for t in PREPARED_AT_INDEX if t in towers.TOWERS[space] and not probe.ready(t)]
        if not missing:
            continue
        # CLIP for indexing may run images through its ONNX tower: its backend is the model. A run
        # that never built it (images only, through the tower) does not import torch just for this:
        # its first text search prepares the text tower, saying so
        if getattr(enc, "engine", None) == "onnx":
            continue
        phase(f"preparing {space} query encoders", None)
        backend = enc.backend() if callable(getattr(enc, "backend", None)) else enc
        if backend.info.checkpoint_sha256 != info.checkpoint_sha256:
            continue
        try:
            from xmr.encoders.tower_export import export_towers

            export_towers(backend, missing, model_id=info.model_id)
        except towers.TowerUnsupported as exc:
            towers.remember_unsupported(info, str(exc))
            continue
        except Exception:  # noqa: BLE001 - only a head start: the first search exports them itself
            continue
        done.extend((space, t) for t in missing)
    return done
