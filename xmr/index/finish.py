"""The finish step, after the last commit: ANN caches, bridge concepts, search state."""

from __future__ import annotations

from collections.abc import Sequence

from xmr import paths
from xmr.catalogue import Catalogue
from xmr.index.embed import Embedder
from xmr.index.models import RunModels
from xmr.index.options import IndexOptions, Progress
from xmr.spaces import SPACES


class Finish:
    """Post-run maintenance of the derived data; none of it is needed for correctness."""

    def __init__(
        self, cat: Catalogue, embedder: Embedder, models: RunModels, spaces: Sequence[str], progress: Progress
    ):
        self.cat = cat
        self.embedder = embedder
        self.models = models
        self.spaces = spaces
        self.progress = progress

    def run(self, options: IndexOptions) -> None:
        if options.checkpoint_ann or options.rebuild_store:
            self._checkpoint_ann(options)
        if options.bridge_concepts:
            self._embed_concepts()
        self._prepare_search_state()
        self._prepare_query_towers()

    def _prepare_query_towers(self) -> None:
        """The first search's fast encoders, exported while this run's models are loaded."""
        from xmr.warmup import prepare_query_towers

        encoders = {space: self.embedder.encoder(space) for space in self.embedder.loaded()}
        prepare_query_towers(self.cat, encoders, self.models.settings, self.progress.phase)

    def _prepare_search_state(self) -> None:
        """Let the first search of this generation find its O(N) arrays ready (xmr.search)."""
        import sqlite3

        from xmr.search import prepare_state

        self.progress.phase("preparing search", None)
        try:
            prepare_state(self.cat, self.cat.index_dir)
        except (OSError, sqlite3.Error, ValueError):
            pass  # only a cache: the first search derives it instead

    def _embed_concepts(self) -> None:
        """Embed the bridge vocabulary with the loaded models, once per model, when a bridge
        can carry results: once both spaces hold vectors. Before that (say a first folder
        of photos) a search that needs a bridge embeds the concepts itself, once."""
        from xmr import bridge

        for space in SPACES:
            model_id = self.cat.active_model(space)
            if not model_id or self.cat.vector_count(space, model_id) == 0:
                return
        if not self.embedder.loaded():
            return  # nothing was embedded this run
        concepts = bridge.load_concepts()
        for space in SPACES:
            model_id = self.cat.active_model(space)
            if not model_id or bridge.cached_concept_matrix(self.cat, model_id, concepts) is not None:
                continue
            if space not in self.embedder.loaded():
                if space not in self.spaces or space in self.models.stale_spaces:
                    continue  # loading it would switch the space's model without re-embedding
                # once per model: the run that gives the second space its first vectors (say the
                # first audio file of a photo collection) embeds the other space's concepts too
                self.models.load([space])
            enc = self.embedder.encoder(space)
            if enc.info.model_id == self.cat.active_model(space):
                self.progress.phase(f"embedding bridge concepts ({space})", None)
                bridge.concept_matrix(self.cat, enc, concepts)

    def _checkpoint_ann(self, options: IndexOptions) -> None:
        """Bring each space's ANN cache up to date: after new work, or when a crash
        left it behind (stale state row, replaced file, leftover temp file)."""
        from xmr.store import open_index
        from xmr.store.policy import choose_backend

        ann = paths.ann_dir(self.cat.index_dir)
        # --codes, else as recorded, else by size; recorded in the settings (an older index: hnswlib)
        backend = choose_backend(self.cat, options.codes, SPACES)
        loaded = self.embedder.loaded()
        for space in self.spaces:
            model_id = self.cat.active_model(space)
            row = self.cat.model_row(model_id) if model_id else None
            if row is None:
                continue
            store = open_index(backend, ann, self.cat, space, model_id, int(row["dim"]))
            # problem(): cheap checks only (state row, size, header, temp files); the checkpoint verifies fully
            if options.rebuild_store and callable(getattr(store, "rebuild", None)):
                self.progress.phase(f"rebuilding vector store ({space})", None)
                store.rebuild()  # type: ignore[attr-defined]
            elif space in loaded or store.problem():
                self.progress.phase(f"saving vector index ({space})", None)
                store.checkpoint()
