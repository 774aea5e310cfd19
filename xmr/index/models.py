"""Which model embeds each space in a run: stale spaces, loading through the embedder,
and recording the models in the catalogue (the driver's side of the model lifecycle)."""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence

from xmr import needed
from xmr.catalogue import Catalogue
from xmr.encoders import honours_precision
from xmr.index.embed import Embedder
from xmr.index.items import _Item
from xmr.index.options import Progress
from xmr.settings import Settings
from xmr.spaces import model_spec


class RunModels:
    """The models of one run's spaces. Only the spaces it loads switch their active model."""

    def __init__(
        self,
        cat: Catalogue,
        embedder: Embedder,
        settings: Settings,
        spaces: Sequence[str],
        spaces_for: Mapping[str, tuple[str, ...]],
        progress: Progress,
    ):
        self.cat = cat
        self.embedder = embedder
        self.settings = settings
        self.spaces = spaces
        self.spaces_for = spaces_for
        self.progress = progress
        self.stale_spaces = self._stale_spaces()
        self._encoded_cache: dict[str, Container[str]] = {}
        self._models: dict[str, str] | None = None  # models() until the next load

    def loaded(self) -> set[str]:
        return set(self.embedder.loaded())

    def _stale_spaces(self) -> set[str]:
        """Spaces whose configured model or precision differs from the one the catalogue was built with."""
        from xmr.encoders import precision

        stale = set()
        wanted: str | None = None
        for space in self.spaces:
            active = self.cat.active_model(space)
            row = self.cat.model_row(active) if active else None
            if row is None or row.get("spec") != self._configured_spec(space):
                stale.add(space)
                continue
            if not honours_precision(space, self.settings):
                continue  # a custom backend's ids are its own
            if wanted is None:
                wanted = precision.expected_tag(self.settings.precision, self.settings.device)
            if precision.of_model_id(active) != wanted:
                stale.add(space)
        return stale

    def _configured_spec(self, space: str) -> str:
        return model_spec(self.settings, space)

    def encoded_by_active(self, space: str) -> Container[str]:
        if space not in self._encoded_cache:
            self._encoded_cache[space] = self.cat.encoded_hashes(space, self.cat.active_model(space))
        return self._encoded_cache[space]

    def done(self, h: str, space: str) -> bool:
        """Content ``h`` already has its vectors in ``space`` by the model the run will use."""
        return space not in self.stale_spaces and h in self.encoded_by_active(space)

    def load_needed(self, work: list[_Item]) -> None:
        """Load the encoders of the spaces the work needs (xmr.needed), not every configured one."""
        self.progress.phase("checking file types", None)
        needs = needed.spaces_needed(work, self.spaces_for, self.spaces, done=self.done)
        spaces = set(needs.spaces)
        # files decoded again for OCR alone (xmr.index.plan) need their kind's decoder: CLIP's preprocessor
        for item in work:
            if item.ocr_pending:
                spaces.update(self.spaces_for.get(item.known_modality or "", ()))
        if not needs.complete:
            # workers need CLIP's image preprocessor, and an image prepared without it is read
            # twice (_complete): assume images in what was not looked at. CLAP can wait.
            spaces.update(self.spaces_for["image"])
        self.load(spaces)

    def load(self, spaces: Iterable[str]) -> None:
        """Load these spaces' encoders. A space left unloaded keeps its active model as it is."""
        loaded = self.embedder.loaded()
        todo = [s for s in self.spaces if s in set(spaces) and s not in loaded]
        self.embedder.check_available(todo)
        for space in todo:
            self.progress.phase(f"loading {space} model", None)
            info = self.embedder.load(space)
            with self.cat.transaction():
                self.cat.ensure_model(info, self._configured_spec(space))
                self.cat.set_setting(f"active_model.{space}", info.model_id)
        self._models = None

    def models(self) -> dict[str, str]:
        """space -> the model whose vectors count as done: the loaded one, else the active one
        while it is still the configured model (a stale space's old vectors must be redone).
        Only a load changes it during a run."""
        if self._models is None:
            models = {s: info.model_id for s, info in self.embedder.loaded().items()}
            for space in self.spaces:
                active = self.cat.active_model(space)
                if space not in models and space not in self.stale_spaces and active:
                    models[space] = active
            self._models = models
        return dict(self._models)
