"""The encoders a search uses: the index's own models, as fast per-tower query encoders.

:class:`QueryEncoders` is what a search (and the server, which keeps one warm)
holds: the query encoder of each space, built on first use with the model and
precision the index was built with. ``query_encoder`` returns, for a space, an object with the ``Encoder`` methods
a search calls. By default that is :class:`xmr.encoders.towers.OnnxQueryEncoder`
(ONNX Runtime, one tower at a time, exported at the end of the ``xmr index`` run that
loaded the model (:mod:`xmr.warmup`), else on first use); the backend itself
(torch) serves where that engine does not apply: ``XMR_QUERY_ENGINE=torch``, an
explicit GPU device, a custom backend, or a model the exporter does not cover.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from xmr.encoders import precision, towers
from xmr.encoders.base import ModelInfo
from xmr.errors import UsageError
from xmr.settings import Settings
from xmr.spaces import INFO

ENGINES = ("onnx", "torch")


def backend_encoder(space: str, row: dict[str, Any] | None, settings: Settings) -> Any:
    """The backend encoder of ``space`` with the model the index was built with."""
    from xmr.encoders import load_encoder

    if row and row.get("spec"):
        settings = replace(settings, **{INFO[space].model_setting: row["spec"]})
    enc = load_encoder(space, settings)
    # the same model at another precision (see xmr.encoders.precision) may embed the query
    if row and precision.base_model_id(enc.info.model_id) != precision.base_model_id(row["id"]):
        raise UsageError(
            f"the {space} model resolves to {enc.info.model_id}, but the index was built with {row['id']}",
            hint="re-index with the model you want to search with",
        )
    return enc


def _uses_backend(space: str, settings: Settings) -> bool:
    engine = (settings.query_engine or "onnx").lower()
    if engine not in ENGINES:
        raise UsageError(f"unknown query engine {engine!r} (XMR_QUERY_ENGINE); choose from {', '.join(ENGINES)}")
    device = (settings.device or "auto").lower()
    return (
        engine == "torch"
        or device.startswith(("cuda", "mps"))
        or space in settings.backends
        or not towers.available()
    )


def model_info(row: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        model_id=row["id"],
        space=row["space"],
        name=row.get("name") or "",
        pretrained=row.get("pretrained"),
        checkpoint_sha256=row.get("checkpoint_sha256"),
        dim=int(row["dim"]),
        preprocessing=row.get("preprocessing") or {},
    )


def uses_query_towers(space: str, row: dict[str, Any] | None, settings: Settings) -> bool:
    """Whether a search embeds this model's queries with its fp32 towers (see ``query_encoder``)."""
    if row is None or _uses_backend(space, settings) or not row.get("checkpoint_sha256"):
        return False
    if precision.of_model_id(row["id"]) != precision.DEFAULT or (settings.precision or "fp32") != precision.DEFAULT:
        return False
    return towers.unsupported_reason(model_info(row)) is None


# a search that finds the towers it needs missing says so once, whatever the spaces (xmr.warmup
# prepares the text ones; an image or audio tower waits for its first query)
NOT_PREPARED = (
    "the fast query encoders this search needs are not prepared yet (`xmr index` prepares the text ones); "
    "preparing them now, once"
)


def query_encoder(
    space: str, row: dict[str, Any] | None, settings: Settings, *, notify: Callable[[str], None] | None = None
) -> Any:
    if row is None or _uses_backend(space, settings) or not row.get("checkpoint_sha256"):
        return backend_encoder(space, row, settings)
    if precision.of_model_id(row["id"]) != precision.DEFAULT or (settings.precision or "fp32") != precision.DEFAULT:
        if space == "clip" and settings.precision == "int8":
            return _int8_clip(row, settings)
        return backend_encoder(space, row, settings)  # the query towers are fp32 exports
    info = model_info(row)
    if towers.unsupported_reason(info):
        return backend_encoder(space, row, settings)

    def export(_names: list[str], root: Path) -> None:
        from xmr.encoders.tower_export import export_towers

        if notify is not None:
            notify(NOT_PREPARED)
        enc = backend_encoder(space, row, settings)
        if enc.info.checkpoint_sha256 != info.checkpoint_sha256:
            # the file behind this model id is not the one that was indexed: export nothing under its key
            raise towers.TowerUnsupported(f"the checkpoint of {info.model_id} changed since it was indexed")
        try:
            export_towers(enc, list(towers.TOWERS[space]), root=root)
        except towers.TowerUnsupported as exc:
            towers.remember_unsupported(info, str(exc), root=root)
            raise
        except OSError as exc:  # a models dir that cannot be written: this process uses the backend
            raise towers.TowerUnsupported(f"cannot write the query towers: {exc}") from exc
        except Exception as exc:  # the exporter or ONNX Runtime failed: use the backend, retry next process
            raise towers.TowerUnsupported(f"cannot export the query towers: {exc}") from exc

    return towers.OnnxQueryEncoder(
        space, info, export=export, fallback=lambda: backend_encoder(space, row, settings)
    )


def _int8_clip(row: dict[str, Any], settings: Settings) -> Any:
    """CLIP at int8: images through the int8 image tower, as indexing embeds them (no torch once
    it exists), text through the backend at int8 (xmr.encoders.engine)."""
    from xmr.encoders.engine import index_encoder

    if row.get("spec"):
        settings = replace(settings, clip_model=row["spec"])
    enc = index_encoder("clip", replace(settings, index_engine="onnx"), prepack=None)
    if precision.base_model_id(enc.info.model_id) != precision.base_model_id(row["id"]):
        raise UsageError(
            f"the clip model resolves to {enc.info.model_id}, but the index was built with {row['id']}",
            hint="re-index with the model you want to search with",
        )
    return enc


def prepare(space: str, row: dict[str, Any], settings: Settings) -> list[str]:
    """Export every tower of one indexed model now (``xmr models prepare``); returns what was done."""
    from xmr.encoders.tower_export import export_towers

    info = model_info(row)
    enc = towers.OnnxQueryEncoder(space, info)
    missing = [t for t in towers.TOWERS[space] if not enc.ready(t)]
    if missing:
        try:
            export_towers(backend_encoder(space, row, settings), missing)
        except towers.TowerUnsupported as exc:
            towers.remember_unsupported(info, str(exc))
            return [f"not covered ({exc}): queries use the backend"]
    return missing


class IndexModels(Protocol):
    """What QueryEncoders reads of an index: its active model per space and their rows
    (xmr.catalogue.Catalogue, or the cached view of it a search works on)."""

    def active_model(self, space: str) -> str | None: ...

    def model_row(self, model_id: str) -> dict[str, Any] | None: ...


class QueryEncoders:
    """The query encoder of each space, built lazily, with the model the index was built with."""

    def __init__(self, cat: IndexModels, settings: Settings, notify: Callable[[str], None] | None = None):
        self.cat = cat
        self.settings = settings
        self._told: set[str] = set()
        self._notify = notify
        self.notify = self._once if notify is not None else None
        self.loaded: dict[str, Any] = {}
        self.notes: list[str] = []  # shown with --explain

    def _once(self, message: str) -> None:
        """Pass a notice on, each text once (both spaces' missing towers are one line)."""
        if message not in self._told and self._notify is not None:
            self._told.add(message)
            self._notify(message)

    def query_model_id(self, space: str) -> str:
        """The model id a query in this space is embedded under: the index's model at the
        precision asked for (the index's own when none is), which keys the query cache."""
        model_id = self.cat.active_model(space) or ""
        if not model_id:
            return ""
        wanted = precision.check(self.settings.precision) or precision.of_model_id(model_id)
        return precision.tag_model_id(precision.base_model_id(model_id), wanted)

    def note_precision(self, space: str, used: str) -> None:
        """Remember for --explain that ``space``'s query was embedded at ``used``, when that is
        not the precision its index was built at."""
        model_id = self.cat.active_model(space)
        built = precision.of_model_id(model_id)
        note = f"{space}: the index was built at {built} ({model_id}); this query was embedded at {used}"
        if model_id and used != built and note not in self.notes:
            self.notes.append(note)

    def get(self, space: str) -> Any:
        """The query encoder of ``space`` (built the first time)."""
        if space not in self.loaded:
            model_id = self.cat.active_model(space)
            row = self.cat.model_row(model_id) if model_id else None
            # queries run at the index's precision unless one is asked for
            built = precision.of_model_id(model_id)
            settings = replace(self.settings, precision=precision.check(self.settings.precision) or built)
            enc = query_encoder(space, row, settings, notify=self.notify)
            self.note_precision(space, getattr(enc, "precision", None) or precision.of_model_id(enc.info.model_id))
            self.loaded[space] = enc
        return self.loaded[space]
