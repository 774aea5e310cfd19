"""What ``xmr serve`` keeps warm between requests, and how it stays current.

One ``WarmIndex`` per server: an open catalogue connection, the opened vector
store of each (space, model) and the encoders, loaded at the first query that
needs them and released after ``idle_unload_s`` without queries.

Searches run one at a time on a single dedicated thread (the catalogue
connection belongs to it; SQLite connections are per thread), through the
library's ``xmr.search.search`` with this object as its ``warm`` context.

Live index: an ``xmr index`` in another process commits batch by batch, each
in one transaction, so a statement never sees half a batch. Before each
search the catalogue's *generation* (its vector count and highest vector id,
O(1)) says whether vectors were added or deleted since the last one; only then
are the derived arrays (live ids, group ids, calibration backgrounds: the
search's ``StateCache``) recomputed, and the vector stores fetch what was
added (a ``VectorIndex`` syncs on count and max id). A new ANN checkpoint (its
state row changed) makes a store reopen from the new file. Query embeddings
are kept in the index's ``EmbeddingCache`` like any search does.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from xmr import paths
from xmr.catalogue import Catalogue
from xmr.encoders.query import QueryEncoders
from xmr.query import QueryPart
from xmr.query_cache import CachedSource, EmbeddingCache, StateCache
from xmr.search import SearchOptions, SearchResponse, search
from xmr.settings import Settings
from xmr.spaces import SPACES

T = TypeVar("T")


class WarmIndex:
    """The server's long-lived search state; see the module docstring."""

    def __init__(
        self,
        index_dir: Path,
        settings: Settings,
        *,
        idle_unload_s: float = 900.0,
        notify: Callable[[str], None] | None = None,
    ):
        self.index_dir = Path(index_dir)
        self.settings = settings
        self.idle_unload_s = float(idle_unload_s)
        self.notify = notify
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xmr-search")
        self._stores: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._encoders: QueryEncoders | None = None
        self._encoder_models: dict[str, str | None] = {}
        self._state: StateCache | None = None
        self.last_query = time.monotonic()
        self.queries = 0
        self.unloads = 0
        self.refreshes = 0
        self._cat: Catalogue = self.call(Catalogue.open, self.index_dir, readonly=True)
        self.catalogue: CachedSource = self.call(self._current)
        self.embeddings = EmbeddingCache(self.index_dir)  # used on the search thread only
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        if self.idle_unload_s > 0:
            self._reaper = threading.Thread(target=self._reap, name="xmr-idle-unload", daemon=True)
            self._reaper.start()

    # -- running on the search thread ---------------------------------------------------
    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        return self._thread.submit(fn, *args, **kwargs)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.submit(fn, *args, **kwargs).result()

    def _current(self) -> CachedSource:
        """The catalogue with the derived arrays of its current generation (recomputed only after a change)."""
        generation = self._cat.generation()
        if self._state is None or self._state.generation != generation:
            self._state = StateCache(self.index_dir, generation)
            self.catalogue = CachedSource(self._cat, self._state)
            self.refreshes += 1
        return self.catalogue

    # -- xmr.search.WarmContext -----------------------------------------------------------
    def store(self, space: str, model_id: str, dim: int) -> Any:
        from xmr.store import index_backend, open_index

        key = (space, model_id, int(dim))
        state = self._cat.get_ann_state(space, model_id)
        entry = self._stores.get(key)
        if entry is None:
            for old in [k for k in self._stores if k[0] == space]:  # the space's model changed
                self._stores.pop(old)[0].close()
            directory = paths.ann_dir(self.index_dir)
            store = open_index(index_backend(self._cat), directory, self.catalogue, space, model_id, dim, readonly=True)
        else:
            store = entry[0]
            # its sync re-derives live ids from the source: it must be this generation's, not the one it opened with
            store.source = self.catalogue
            if entry[1] != state:  # an index run wrote a new checkpoint: reopen from it
                store.refresh()
        self._stores[key] = (store, state)
        return store

    def encoders(self, settings: Settings) -> QueryEncoders:
        models = {space: self._cat.active_model(space) for space in SPACES}
        if self._encoders is None or models != self._encoder_models:
            self._release_encoders()
            self._encoders = QueryEncoders(self.catalogue, self.settings, self.notify)  # type: ignore[arg-type]
            self._encoder_models = models
        return self._encoders

    # -- queries ---------------------------------------------------------------------------
    def search(self, parts: Sequence[QueryPart], options: SearchOptions) -> SearchResponse:
        """Run a query on the search thread (blocking the caller)."""
        return self.call(self._search, list(parts), options)

    def _search(self, parts: list[QueryPart], options: SearchOptions) -> SearchResponse:
        self._current()
        try:
            return search(
                parts, index_dir=self.index_dir, settings=self.settings, options=options, notify=self.notify, warm=self
            )
        finally:
            self.last_query = time.monotonic()
            self.queries += 1

    def loaded_models(self) -> list[str]:
        enc = self._encoders
        return sorted(e.info.model_id for e in enc.loaded.values()) if enc is not None else []

    # -- memory ------------------------------------------------------------------------------
    def _release_encoders(self) -> bool:
        from xmr.encoders import release

        had = bool(self._encoders and self._encoders.loaded)
        self._encoders = None
        release()  # load_encoder keeps the last backend model per space for reuse: let it go too
        gc.collect()
        return had

    def unload(self) -> bool:
        """Release the models now (the index stays open); True when something was loaded."""

        def run() -> bool:
            had = self._release_encoders()
            self.unloads += had
            return had

        return self.call(run)

    def _reap(self) -> None:
        period = min(60.0, max(0.05, self.idle_unload_s / 4))
        while not self._stop.wait(period):
            if self._encoders is not None and time.monotonic() - self.last_query >= self.idle_unload_s:
                self.unload()

    def stats(self) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            return {
                "queries": self.queries,
                "loaded_models": self.loaded_models(),
                "idle_unload_s": self.idle_unload_s,
                "idle_s": round(time.monotonic() - self.last_query, 1),
                "model_unloads": self.unloads,
                "stores": [s.stats() | {"state": None} for s, _ in self._stores.values()],
                "refreshes": self.refreshes,
            }

        return self.call(run)

    def close(self) -> None:
        self._stop.set()

        def run() -> None:
            for store, _ in self._stores.values():
                store.close()
            self._stores.clear()
            self._release_encoders()
            self.embeddings.close()
            self._cat.close()

        try:
            self.call(run)
        finally:
            self._thread.shutdown(wait=True)
