"""What ``xmr serve`` keeps warm between requests, and how it stays current.

One ``WarmIndex`` per server: an open catalogue connection, the opened vector
store of each (space, model) and the encoders, loaded at the first query that
needs them and released after ``idle_unload_s`` without queries.

Searches run one at a time on a single dedicated thread (the catalogue
connection belongs to it; SQLite connections are per thread), through the
library's ``xmr.search.search`` with this object as its ``warm`` context.

Live index: an ``xmr index`` in another process commits batch by batch, each
in one transaction, so a statement never sees half a batch. Before each
search ``PRAGMA data_version`` (one cheap read) says whether another
connection committed since the last one; only then are the memoised
aggregate reads (group ids, counts, live ids) dropped, and the vector stores
fetch what was added (``VectorStore`` syncs on count and max id). A new ANN
checkpoint (its state row changed) makes a store reopen from the new file.
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
from xmr.query import QueryPart
from xmr.search import SearchOptions, SearchResponse, _Encoders, search
from xmr.settings import Settings

T = TypeVar("T")

# Catalogue reads a search repeats that only change when something is committed.
_MEMOISED = frozenset(
    {
        "active_model",
        "model_row",
        "segment_kinds",
        "group_vector_ids",
        "live_vector_ids",
        "vector_count",
        "max_vector_id",
        "get_ann_state",
        "concept_vectors",
    }
)


def _key(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_key(v) for v in value)
    return value


class CachedCatalogue:
    """A view of an open ``Catalogue`` that memoises ``_MEMOISED`` reads until a commit.

    ``check()`` compares ``PRAGMA data_version`` (changes when another
    connection commits) and our own writes go through ``transaction()``, so
    both kinds of change drop the memo.
    """

    def __init__(self, cat: Catalogue):
        self._cat = cat
        self._memo: dict[Any, Any] = {}
        self._version: int | None = None
        self.invalidations = 0

    def check(self) -> bool:
        """Drop memoised reads if the database changed; True when it did."""
        version = self._cat.conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return False
        self._version = version
        self._memo.clear()
        self.invalidations += 1
        return True

    def transaction(self) -> Any:
        self._memo.clear()
        self._version = None  # re-read after our own commit too
        return self._cat.transaction()

    def put_ann_state(self, space: str, model_id: str, state: dict[str, Any]) -> None:
        # a store that rebuilt its ANN file writes outside transaction(): our own write does not
        # change data_version for this connection, so forget the memo here
        self._memo.clear()
        self._cat.put_ann_state(space, model_id, state)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._cat, name)
        if name not in _MEMOISED:
            return attr

        def memoised(*args: Any, **kwargs: Any) -> Any:
            key = (name, _key(args), _key(tuple(sorted(kwargs.items()))))
            if key not in self._memo:
                self._memo[key] = attr(*args, **kwargs)
            value = self._memo[key]
            return dict(value) if isinstance(value, dict) else value  # callers may add to a dict

        return memoised


class WarmIndex:
    """The server's long-lived search state; see the module docstring."""

    def __init__(self, index_dir: Path, settings: Settings, *, idle_unload_s: float = 900.0):
        self.index_dir = Path(index_dir)
        self.settings = settings
        self.idle_unload_s = float(idle_unload_s)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xmr-search")
        self._stores: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._encoders: _Encoders | None = None
        self._encoder_models: dict[str, str | None] = {}
        self.last_query = time.monotonic()
        self.queries = 0
        self.unloads = 0
        self.catalogue: CachedCatalogue = self.call(self._open)
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        if self.idle_unload_s > 0:
            self._reaper = threading.Thread(target=self._reap, name="xmr-idle-unload", daemon=True)
            self._reaper.start()

    # -- running on the search thread ---------------------------------------------------
    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._thread.submit(fn, *args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self.submit(fn, *args).result()

    def _open(self) -> CachedCatalogue:
        return CachedCatalogue(Catalogue.open(self.index_dir))

    # -- xmr.search.WarmContext -----------------------------------------------------------
    def store(self, space: str, model_id: str, dim: int) -> Any:
        from xmr.vectorstore import VectorStore

        key = (space, model_id, int(dim))
        state = self.catalogue.get_ann_state(space, model_id)
        entry = self._stores.get(key)
        if entry is None:
            for old in [k for k in self._stores if k[0] == space]:  # the space's model changed
                self._stores.pop(old)[0].close()
            store = VectorStore(paths.ann_dir(self.index_dir), self.catalogue, space, model_id, dim)
        else:
            store = entry[0]
            if entry[1] != state:  # an index run wrote a new checkpoint: reopen from it
                store.refresh()
        self._stores[key] = (store, state)
        return store

    def encoders(self, settings: Settings) -> _Encoders:
        models = {space: self.catalogue.active_model(space) for space in ("clip", "clap")}
        if self._encoders is None or models != self._encoder_models:
            self._release_encoders()
            self._encoders = _Encoders(self.catalogue, self.settings)  # type: ignore[arg-type]
            self._encoder_models = models
        return self._encoders

    # -- queries ---------------------------------------------------------------------------
    def search(self, parts: Sequence[QueryPart], options: SearchOptions) -> SearchResponse:
        """Run a query on the search thread (blocking the caller)."""
        return self.call(self._search, list(parts), options)

    def _search(self, parts: list[QueryPart], options: SearchOptions) -> SearchResponse:
        self.catalogue.check()
        try:
            return search(parts, index_dir=self.index_dir, settings=self.settings, options=options, warm=self)
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
        release()  # load_encoder keeps the last model per space for reuse: let it go too
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
                "refreshes": self.catalogue.invalidations,
            }

        return self.call(run)

    def close(self) -> None:
        self._stop.set()

        def run() -> None:
            for store, _ in self._stores.values():
                store.close()
            self._stores.clear()
            self._release_encoders()
            self.catalogue._cat.close()

        try:
            self.call(run)
        finally:
            self._thread.shutdown(wait=True)
