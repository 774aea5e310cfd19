"""Caches a search keeps beside the index (``INDEX/cache/``): never the catalogue, never required.

* **Query embeddings** (``queries.db``): the rows a query part embeds to, keyed
  by the model, the part's kind and a hash of its text or file content, so a
  repeated query (the same text, or the same file under any name) runs no
  encoder. Bounded: the least recently used entries go beyond ``MAX_ENTRIES``.
* **Answers** (``queries.db`` too): what one group's vector index returned for a
  query's vectors, keyed by the catalogue generation, the vector index's
  ``fingerprint()``, the group, the vectors, k and the filters, so a repeated query does not
  load the ANN file at all. Bounded like the embeddings (``MAX_ANSWERS``).
* **Search state** (``state-*.npz``): per (space, model) the arrays a search
  derives from the catalogue in O(N) (live vector ids, the ids of each segment
  kind, calibration backgrounds), valid for one catalogue *generation* (its
  vector count and highest vector id, which change with every insert or delete).

Everything here fails silently: a cache that cannot be read or written (a
read-only index directory, a full disk) is simply not used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CACHE_DIR = "cache"
MAX_ENTRIES = 4096
MAX_ANSWERS = 1024
_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    key TEXT PRIMARY KEY,           -- blake2b of (xmr version, model id, kind, how read, content)
    model_id TEXT NOT NULL,
    rows INTEGER NOT NULL,
    dim INTEGER NOT NULL,
    vectors BLOB NOT NULL,          -- float32 little-endian, rows x dim
    used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,           -- blake2b of (xmr version, generation, ANN state, group, vectors, k, filters)
    rows INTEGER NOT NULL,
    k INTEGER NOT NULL,
    ids BLOB NOT NULL,              -- int64 little-endian, rows x k
    sims BLOB NOT NULL,             -- float32 little-endian, rows x k
    used REAL NOT NULL
)
"""


def cache_dir(index_dir: Path) -> Path:
    return Path(index_dir) / CACHE_DIR


def part_key(model_id: str, kind: str, value: str) -> str | None:
    """The cache key of one query part: text by its value, files by their bytes (None: unreadable).

    The key also names the xmr version (another version may embed or read differently: its
    entries are not reused) and, for a text file, how it is read: the same bytes named
    ``page.html`` (visible text) and ``page.txt`` (every character) embed differently.
    """
    from xmr import __version__

    h = hashlib.blake2b(digest_size=20)
    h.update(f"xmr {__version__}\0{model_id}\0{kind}\0".encode())
    if kind == "text_file":
        from xmr.documents import any_kind
        from xmr.errors import XmrError

        try:
            h.update(f"{any_kind(value)}\0".encode())
        except XmrError:
            return None
    if kind == "text":
        h.update(value.encode("utf-8", "surrogatepass"))
    else:
        try:
            with open(value, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            return None
    return h.hexdigest()


class EmbeddingCache:
    def __init__(self, index_dir: Path) -> None:
        self.path = cache_dir(index_dir) / "queries.db"
        self._conn: sqlite3.Connection | None = None
        self._failed = False

    def _db(self, *, create: bool) -> sqlite3.Connection | None:
        if self._conn is not None or self._failed:
            return self._conn
        if not create and not self.path.exists():
            return None
        try:
            new = False
            if create:
                self.path.parent.mkdir(mode=0o700, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                new = os.fstat(fd).st_size == 0
                os.close(fd)
            conn = sqlite3.connect(self.path, timeout=0.5, isolation_level=None)
            # WAL with synchronous=NORMAL: a commit syncs nothing (a cache may lose its last
            # entries at a power cut, never its consistency), where the default journal synced
            # twice per write, 30-odd syncs in one cold search
            with contextlib.suppress(sqlite3.Error):  # a read-only cache keeps its journal mode
                if new:  # an empty file has nothing to lose: its switch to WAL (a rollback-journal
                    conn.execute("PRAGMA synchronous=OFF")  # transaction) skips 3-4 syncs, 10-150 ms
                conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        except (OSError, sqlite3.Error):
            self._failed = True
        return self._conn

    def get(self, key: str | None) -> np.ndarray | None:
        db = self._db(create=False) if key else None
        if db is None:
            return None
        try:
            row = db.execute("SELECT rows, dim, vectors FROM embeddings WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            with contextlib.suppress(sqlite3.Error):  # a read-only cache still answers
                db.execute("UPDATE embeddings SET used = ? WHERE key = ?", (time.time(), key))
        except sqlite3.Error:
            return None
        n, dim, blob = row
        try:
            return np.frombuffer(blob, dtype="<f4").reshape(n, dim).astype(np.float32)
        except (TypeError, ValueError):  # a damaged row is a miss: a cache never fails a search
            return None

    def put(self, key: str | None, model_id: str, rows: np.ndarray) -> None:
        db = self._db(create=True) if key else None
        if db is None:
            return
        rows = np.ascontiguousarray(rows, dtype="<f4")
        try:
            db.execute(
                "INSERT OR REPLACE INTO embeddings (key, model_id, rows, dim, vectors, used) VALUES (?, ?, ?, ?, ?, ?)",
                (key, model_id, int(rows.shape[0]), int(rows.shape[1]), rows.tobytes(), time.time()),
            )
            n = db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
            if n > MAX_ENTRIES:
                db.execute(
                    "DELETE FROM embeddings WHERE key IN (SELECT key FROM embeddings ORDER BY used LIMIT ?)",
                    (n - MAX_ENTRIES,),
                )
        except sqlite3.Error:
            pass

    # -- nearest-neighbour answers: what one group's index returned for these query vectors
    def get_answer(self, key: str | None) -> tuple[np.ndarray, np.ndarray] | None:
        db = self._db(create=False) if key else None
        if db is None:
            return None
        try:
            row = db.execute("SELECT rows, k, ids, sims FROM answers WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            with contextlib.suppress(sqlite3.Error):
                db.execute("UPDATE answers SET used = ? WHERE key = ?", (time.time(), key))
        except sqlite3.Error:
            return None
        n, k, ids, sims = row
        try:
            return (
                np.frombuffer(ids, dtype="<i8").reshape(n, k).astype(np.int64),
                np.frombuffer(sims, dtype="<f4").reshape(n, k).astype(np.float32),
            )
        except (TypeError, ValueError):
            return None

    def put_answer(self, key: str | None, ids: np.ndarray, sims: np.ndarray) -> None:
        db = self._db(create=True) if key else None
        if db is None:
            return
        ids = np.ascontiguousarray(ids, dtype="<i8")
        sims = np.ascontiguousarray(sims, dtype="<f4")
        if ids.ndim != 2 or ids.shape != sims.shape:
            return
        try:
            db.execute(
                "INSERT OR REPLACE INTO answers (key, rows, k, ids, sims, used) VALUES (?, ?, ?, ?, ?, ?)",
                (key, int(ids.shape[0]), int(ids.shape[1]), ids.tobytes(), sims.tobytes(), time.time()),
            )
            n = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
            if n > MAX_ANSWERS:
                db.execute(
                    "DELETE FROM answers WHERE key IN (SELECT key FROM answers ORDER BY used LIMIT ?)",
                    (n - MAX_ANSWERS,),
                )
        except sqlite3.Error:
            pass

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class StateCache:
    """O(N) arrays of one catalogue generation, as ``.npz`` files named by the generation."""

    def __init__(self, index_dir: Path, generation: tuple[int, ...] | None) -> None:
        self.dir = cache_dir(index_dir)
        self.generation = generation
        self._mem: dict[str, np.ndarray] = {}

    def _file(self, name: str, generation: tuple[int, ...] | None = None) -> Path:
        gen = "-".join(str(g) for g in (generation or self.generation or ()))
        return self.dir / f"state-{gen}-{_digest(name)}.npy"

    def previous(self, name: str) -> tuple[tuple[int, ...], np.ndarray] | None:
        """``name``'s array of the newest older generation still on disk, with that generation."""
        if self.generation is None:
            return None
        best: tuple[int, ...] | None = None
        for p in self.dir.glob(f"state-*-{_digest(name)}.npy"):
            try:
                gen = tuple(int(g) for g in p.name.split("-")[1:-1])
            except ValueError:
                continue
            if gen == tuple(self.generation) or len(gen) != len(self.generation):
                continue
            if best is None or gen[::-1] > best[::-1]:  # the newest: ids only grow, so the highest id first
                best = gen
        if best is None:
            return None
        try:
            return best, np.load(self._file(name, best), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None

    def get(self, name: str) -> np.ndarray | None:
        if name in self._mem:
            return self._mem[name]
        if self.generation is None:
            return None
        try:
            # mapped, read only: a search reads what it uses of them (the group ids, 8 bytes a
            # vector, mostly give their length); files are replaced whole, never written in place
            arr = np.load(self._file(name), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):  # EOFError: an empty file
            return None
        self._mem[name] = arr
        return arr

    def put(self, name: str, arr: np.ndarray) -> None:
        self._mem[name] = arr
        if self.generation is None:
            return
        target = self._file(name)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
            os.replace(tmp, target)
            self._prune(target)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def drop_older(self) -> None:
        """Remove every array of another generation (a writer, once this generation's are all
        written: arrays of a model or kind that is gone would otherwise stay)."""
        prefix = "state-" + "-".join(str(g) for g in self.generation or ()) + "-"
        for p in self.dir.glob("state-*.npy"):
            if self.generation is not None and not p.name.startswith(prefix):
                with contextlib.suppress(OSError):
                    p.unlink()

    def _prune(self, keep: Path) -> None:
        """The same array of older generations is dead weight once this one is written: drop
        it. Other arrays of an older generation stay until theirs is (``previous`` extends them)."""
        for p in self.dir.glob(f"state-*-{keep.name.rsplit('-', 1)[-1]}"):
            if p != keep:
                with contextlib.suppress(OSError):
                    p.unlink()


class CachedSource:
    """The catalogue as a ``VectorSource`` whose O(N) id lists come from a ``StateCache``."""

    def __init__(self, cat: object, state: StateCache) -> None:
        self._cat = cat
        self.state = state
        self._added: dict[tuple[int, ...], bool] = {}  # older generation -> only additions since

    def __getattr__(self, name: str) -> object:
        return getattr(self._cat, name)

    def cached(
        self, name: str, compute: object, extend: Callable[[int, np.ndarray], np.ndarray | None] | None = None
    ) -> np.ndarray:
        """``name``'s array of this generation: from the cache, else ``extend(after_id, old)``ed
        from an older generation's when only vectors were added since (ids above ``after_id``;
        None from it: the result does not add up, compute instead), else computed. At 5M
        vectors the three arrays of a space took 11 s to compute, and 4 files added 0.1 s."""
        arr = self.state.get(name)
        if arr is None:
            prev = self.state.previous(name) if extend is not None else None
            if prev is not None and extend is not None and self._only_added_since(prev[0]):
                arr = extend(prev[0][1], prev[1])
            if arr is None:
                arr = compute()  # type: ignore[operator]
            arr = np.asarray(arr)
            self.state.put(name, arr)
        return arr

    def _only_added_since(self, generation: tuple[int, ...]) -> bool:
        """Whether this generation (vectors, highest id) holds the older one's vectors and more."""
        now = self.state.generation
        if now is None or len(generation) != 2 or len(now) != 2 or generation[1] > now[1]:
            return False
        if generation not in self._added:
            added = self._cat.vectors_after(generation[1])  # type: ignore[attr-defined]
            self._added[generation] = now[0] - generation[0] == added
        return self._added[generation]

    def live_vector_ids(self, space: str, model_id: str) -> np.ndarray:
        cat: Any = self._cat

        def extend(after: int, old: np.ndarray) -> np.ndarray | None:
            ids = _joined(old, after, cat.live_vector_ids(space, model_id, after_id=after))
            return ids if len(ids) == cat.vector_count(space, model_id) else None

        return self.cached(f"live\0{space}\0{model_id}", lambda: cat.live_vector_ids(space, model_id), extend)

    def group_vector_ids(self, space: str, model_id: str, kind: str, *, under: tuple[str, ...] = ()) -> np.ndarray:
        cat: Any = self._cat
        if under:  # depends on paths too: not cached
            return cat.group_vector_ids(space, model_id, kind, under=under)

        def extend(after: int, old: np.ndarray) -> np.ndarray | None:
            ids = _joined(old, after, cat.group_vector_ids(space, model_id, kind, after_id=after))
            return ids if len(ids) == self.segment_kinds(space, model_id).get(kind, 0) else None

        return self.cached(
            f"group\0{space}\0{model_id}\0{kind}", lambda: cat.group_vector_ids(space, model_id, kind), extend
        )

    def segment_kinds(self, space: str, model_id: str) -> dict[str, int]:
        cat: Any = self._cat

        def rows(counts: dict[str, int]) -> np.ndarray:
            return np.array([f"{k}\t{n}" for k, n in sorted(counts.items())])

        def extend(after: int, old: np.ndarray) -> np.ndarray | None:
            counts = _kind_counts(old)
            for k, n in cat.segment_kinds(space, model_id, after_id=after).items():
                counts[k] = counts.get(k, 0) + int(n)
            return rows(counts) if sum(counts.values()) == cat.vector_count(space, model_id) else None

        name = f"kinds\0{space}\0{model_id}"
        return _kind_counts(self.cached(name, lambda: rows(cat.segment_kinds(space, model_id)), extend))


def _joined(old: np.ndarray, after: int, new: np.ndarray) -> np.ndarray:
    """Sorted ids up to ``after`` from an older array, then the newer ones (an array computed
    while a writer committed may already hold some of them)."""
    return np.concatenate([old[: int(np.searchsorted(old, after, side="right"))], np.asarray(new, np.int64)])


def _kind_counts(arr: np.ndarray) -> dict[str, int]:
    return {k: int(n) for k, n in (str(x).split("\t") for x in arr.tolist())}


def _digest(name: str) -> str:
    """A state array's name in its file name (with xmr's version: another version's are not read)."""
    from xmr import __version__

    return hashlib.blake2b(f"{__version__}\0{name}".encode(), digest_size=8).hexdigest()
