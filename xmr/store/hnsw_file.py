"""hnswlib's index file on disk, and whether it can be trusted.

The file is a derived cache of the catalogue: it is trusted only when it
matches the catalogue's state row (size, checksum, header, dimension, model,
element count), and the header is checked BEFORE hnswlib sees the bytes, so a
damaged file never reaches hnswlib (whose loader can crash on bad input).

Saving (``HnswFile.save``): written to a temporary file in the same directory,
fsynced, ``os.replace``d over the old file, directory fsynced, and only then
the state row is put. Writers (checkpoints, rebuilds) are serialised by an
flock on ``<file>.build.lock``; the replace + state put happens under an
exclusive flock on ``<file>.swap.lock`` and readers read the state row and open
the file under a shared one, so what a reader checks is exactly the file the
state row describes. The open descriptor is what gets loaded
(``/proc/self/fd``), so a concurrent ``os.replace`` cannot swap the bytes
between checking and loading. Where flock is unavailable a mismatch is retried
before the file is judged invalid.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from xmr import paths
from xmr.store.fsutil import flock, fsync_dir, pread, short_write_errno
from xmr.store.mapped import MappedIndex
from xmr.store.source import VectorSource, fetch_vectors

STATE_FORMAT = 1
METRIC = "ip"  # vectors are L2-normalised, so inner product == cosine
HEADER = struct.Struct("<QQQQQQiIQQQdQ")  # hnswlib 0.8 saveIndex header (96 bytes)
_HASH_CHUNK = 64 << 20
_READ_PIECE = 8 << 20


def index_file_name(space: str, model_id: str) -> str:
    """File name of the ANN cache for (space, model): readable and collision-free."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{space}--{model_id}")[:64]
    digest = hashlib.blake2b(f"{space}\0{model_id}".encode(), digest_size=5).hexdigest()
    return f"{slug}-{digest}.hnsw"


def hnswlib_version() -> str:
    from importlib import metadata  # only when a file is written: a search need not import it

    try:
        return metadata.version("hnswlib")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def file_checksum(path: str | os.PathLike[str]) -> str:
    """Checksum of a file's bytes as stored in the state row (see ``checksum_fd``)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        return checksum_fd(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def checked_header(
    fd: int, size: int, length: int, *, size_want: Any, checksum_want: Any, full: bool, name: str = ""
) -> tuple[bytes, str]:
    """The first ``length`` bytes of an open file once its state row's checks pass: the recorded
    size, and with ``full`` the whole-file checksum; (b"", why) when one fails.

    ``name`` prefixes the messages of a second file ("code file"); the main file's size and
    checksum messages start with "checksum", which a concurrent checkpoint can explain
    (``HnswFile`` retries those)."""
    if size_want is None or size != int(size_want):
        return b"", f"{name + ' size' if name else 'checksum: size'} {size} != {size_want} (truncated or replaced)"
    try:
        if full and checksum_fd(fd, size) != checksum_want:
            return b"", f"{name + ' ' if name else ''}checksum mismatch (corrupt or stale)"
        return pread(fd, length, 0), ""
    except OSError as e:
        return b"", f"{name or 'index file'} unreadable: {e}"


def checksum_fd(fd: int, size: int) -> str:
    """blake2b tree hash: blake2b over (size, blake2b of each 64 MiB chunk).

    The chunks hash in parallel threads (pread and blake2b release the GIL),
    which halves the check of a 2 GB index on two cores (~0.8 GB/s per core).
    """

    def chunk_digest(i: int) -> bytes:
        h = hashlib.blake2b(digest_size=32)
        off, end = i * _HASH_CHUNK, min(size, (i + 1) * _HASH_CHUNK)
        while off < end:
            piece = pread(fd, min(_READ_PIECE, end - off), off)
            if not piece:
                raise OSError("file shrank while hashing")
            h.update(piece)
            off += len(piece)
        return h.digest()

    n_chunks = max(1, -(-size // _HASH_CHUNK))
    # threads only where pread exists (no shared file offset to race on)
    workers = min(n_chunks, os.cpu_count() or 1, 4) if hasattr(os, "pread") else 1
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            digests = list(ex.map(chunk_digest, range(n_chunks)))
    else:
        digests = [chunk_digest(i) for i in range(n_chunks)]
    top = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=32)
    for d in digests:
        top.update(d)
    return "blake2b-tree64m:" + top.hexdigest()


def check_header(raw: bytes, *, dim: int, element_count: int, file_size: int) -> str | None:
    """Why an hnswlib 0.8 file header does not describe ``element_count`` vectors of ``dim``.

    hnswlib does not store the dimension and loads a wrong-dim file without a
    word (then reads past each element), so the layout is checked here.
    """
    if len(raw) < HEADER.size:
        return "file shorter than its header"
    (off0, _max_el, cur, size_per, label_off, off_data, max_level, entry, max_m, max_m0, m, _mult, efc) = HEADER.unpack(
        raw[: HEADER.size]
    )
    links0 = max_m0 * 4 + 4
    if off0 != 0 or off_data != links0 or max_m0 != 2 * m or max_m != m or not 2 <= m <= 4096:
        return "header is not an hnswlib index"
    if size_per != links0 + dim * 4 + 8 or label_off != links0 + dim * 4:
        stored = (size_per - links0 - 8) / 4
        return f"index holds {stored:g}-d vectors, expected {dim}"
    if cur != element_count:
        return f"index holds {cur} elements, state says {element_count}"
    if not 0 <= max_level < 64 or (cur and entry >= cur) or efc < 1:
        return "header values out of range"
    if file_size < HEADER.size + cur * (size_per + 4):
        return "file shorter than its elements"
    return None


class HnswFile:
    """The ANN file of one (space, model) and its state row: check, load, save, remove."""

    def __init__(self, directory: Path, source: VectorSource, space: str, model_id: str, dim: int) -> None:
        self.directory = Path(directory)
        self.source = source
        self.space = space
        self.model_id = model_id
        self.dim = int(dim)
        self.path = self.directory / index_file_name(space, model_id)

    def lock_path(self, kind: str) -> Path:
        return self.directory / f"{self.path.name}.{kind}.lock"

    def swap_lock(self, exclusive: bool, *, create: bool) -> contextlib.AbstractContextManager[bool]:
        return flock(self.lock_path("swap"), exclusive, create=create)

    def state(self) -> dict | None:
        state = self.source.get_ann_state(self.space, self.model_id)
        return state if isinstance(state, dict) else None

    def temp_files(self) -> list[Path]:
        """Temporary files of saves that did not finish (a crashed writer's, or one in progress)."""
        return list(self.directory.glob(f".{self.path.name}.*.tmp"))

    def fingerprint(self) -> str:
        """The state row and the file's identity: any checkpoint or write to the file changes it."""
        try:  # any write to the file (a damaged copy too) changes this
            st = os.stat(self.path)
            file_id: list[int] = [st.st_size, st.st_mtime_ns, st.st_ino]
        except OSError:
            file_id = []
        return json.dumps([self.state(), file_id], sort_keys=True, default=str)

    # -- trust ---------------------------------------------------------------------------
    def load_valid(self, *, full: bool, mapped: bool) -> tuple[Any, dict | None, str]:
        """(index, state, "") for a valid file, else (None, state, why)."""
        why = "no state"
        state = None
        for attempt in range(3):
            with self.swap_lock(False, create=False) as locked:
                state = self.state()
                why, fd, size = self.precheck(state)
                if fd is None:
                    return None, state, why
                try:
                    why = self.verify_fd(fd, size, state, full=full)  # type: ignore[arg-type]
                    if not why:
                        index, why = self._map_fd(fd, size, state) if mapped else self._load_fd(fd, state)  # type: ignore[arg-type]
                        why = why or self._ids_reused(index, state)  # type: ignore[arg-type]
                        if not why:
                            return index, state, ""
                finally:
                    os.close(fd)
            if locked or not why.startswith("checksum"):
                break
            time.sleep(0.05 * (attempt + 1))  # unlocked: maybe mid-replace, look again
        return None, state, why

    def precheck(self, state: dict | None) -> tuple[str, int | None, int]:
        """(why, None, 0) when the state row rules the file out, else ("", open fd, size)."""
        if state is None:
            return "no state row", None, 0
        if state.get("format") != STATE_FORMAT:
            return "state row of another format", None, 0
        if state.get("file") is None:
            return "no ANN file was checkpointed", None, 0
        expect = {
            "space": self.space,
            "model_id": self.model_id,
            "dim": self.dim,
            "metric": METRIC,
            "file": self.path.name,
        }
        for key, want in expect.items():
            if state.get(key) != want:
                return f"state {key} is {state.get(key)!r}, expected {want!r}", None, 0
        try:
            max_id = int(state["max_vector_id"])
            int(state["element_count"]), int(state["file_size"])
        except (KeyError, TypeError, ValueError):
            return "state row incomplete", None, 0
        if max_id > self.source.max_vector_id(self.space, self.model_id):
            return "catalogue is older than the index (reset or restored)", None, 0
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            return "index file missing", None, 0
        except OSError as e:
            return f"index file unreadable: {e}", None, 0
        return "", fd, os.fstat(fd).st_size

    def verify_fd(self, fd: int, size: int, state: dict, *, full: bool = False) -> str:
        """Why the open file does not match its state row ("" when it does).

        On open only what is cheap: the size and the header (dimension, element
        count, layout), and after loading the newest vectors against the
        catalogue (``_ids_reused``). The whole-file checksum, written
        at every checkpoint, is verified by ``full_check`` (``xmr status --check``).
        """
        header, why = checked_header(
            fd, size, HEADER.size, size_want=state["file_size"], checksum_want=state.get("checksum"), full=full
        )
        if why:
            return why
        return check_header(header, dim=self.dim, element_count=int(state["element_count"]), file_size=size) or ""

    def cheap_problem(self) -> str:
        """What is wrong with the file that costs nothing to see (size, header, state row), or ""."""
        state = self.state()
        if state is not None and state.get("file") is None:
            return "a vector index file exists without a state row" if self.path.exists() else ""
        why, fd, size = self.precheck(state)
        if fd is None:
            return why
        try:
            return self.verify_fd(fd, size, state)  # type: ignore[arg-type]
        finally:
            os.close(fd)

    def full_check(self) -> str:
        """The state row's checks and the whole file's checksum ("" when sound); the caller holds a swap lock."""
        state = self.state()
        why, fd, size = self.precheck(state)
        if fd is None:
            return why
        try:
            return self.verify_fd(fd, size, state, full=True)  # type: ignore[arg-type]
        finally:
            os.close(fd)

    def discard_if_damaged(self) -> bool:
        """Remove the file if, under the writers' swap lock, it still fails ``full_check``.

        The lock and the second look keep a checkpoint that an index run swapped in since
        (a sound file) from being removed.
        """
        with self.swap_lock(True, create=False):
            if not self.full_check() or not self.path.exists():
                return False
            self.path.unlink()
            return True

    def _ids_reused(self, index: Any, state: dict) -> str:
        """Why the catalogue no longer holds, under the file's ids, the file's vectors.

        A catalogue that hands out max(id)+1 (SQLite INTEGER PRIMARY KEY without
        AUTOINCREMENT) reuses the ids of deleted newest rows. If any id <= the
        state's max_vector_id was reused, the highest live id <= it was too
        (every id above the reuse point had been deleted), so comparing the
        top few live ids with the file detects reuse at the cost of one query.
        """
        state_max = int(state["max_vector_id"])
        ids = vecs = None
        for window in (64, 4096):
            ids, vecs = self._fetch(after_id=max(0, state_max - window), batch=window, until=state_max)
            if len(ids):
                break
        else:  # no live id near the top: look up the highest ones (rare)
            live = self.source.live_vector_ids(self.space, self.model_id)
            live = live[live <= state_max][-8:]
            if not len(live):
                return ""
            parts = [self._fetch(after_id=int(i) - 1, batch=1, until=int(i)) for i in live]
            ids = np.concatenate([p[0] for p in parts])
            vecs = np.concatenate([p[1] for p in parts])
        ids, vecs = ids[-8:], vecs[-8:]
        try:
            stored = np.asarray(index.get_items(ids), dtype=np.float32)
        except RuntimeError:  # a live id <= max that the file does not hold
            return "catalogue ids do not match the index (ids reused or catalogue replaced)"
        if not np.array_equal(stored, vecs):
            return "catalogue vectors differ from the index under the same ids (ids reused)"
        return ""

    def _fetch(self, after_id: int, *, batch: int, until: int) -> tuple[np.ndarray, np.ndarray]:
        return fetch_vectors(
            self.source, self.space, self.model_id, self.dim, after_id=after_id, batch=batch, until=until
        )

    def _load_fd(self, fd: int, state: dict) -> tuple[Any, str]:
        import hnswlib

        proc = f"/proc/self/fd/{fd}"
        use_proc = os.path.exists(proc)
        st = os.fstat(fd)
        count = int(state["element_count"])
        index = hnswlib.Index(space=METRIC, dim=self.dim)
        try:
            index.load_index(proc if use_proc else str(self.path), max_elements=count)
        except Exception as e:  # hnswlib raises RuntimeError/ValueError on bad files
            return None, f"hnswlib could not load the file: {e}"
        if not use_proc:
            try:
                same = os.stat(self.path).st_ino == st.st_ino
            except OSError:
                same = False
            if not same:
                return None, "checksum: file replaced while loading"
        if index.element_count != count or index.dim != self.dim or index.index_file_size() != st.st_size:
            return None, "loaded index does not match its state row"
        return index, ""

    def _map_fd(self, fd: int, size: int, state: dict) -> tuple[Any, str]:
        try:
            index = MappedIndex(fd, size, HEADER, self.dim)
        except (OSError, ValueError) as e:
            return None, f"could not map the file: {e}"
        why = index.problem(int(state["max_vector_id"]))
        if why:
            index.close()
            return None, why
        return index, ""

    # -- writing -------------------------------------------------------------------------
    def remove_temp_files(self) -> None:
        """Remove crashed writers' temporary files; call only while holding the build lock."""
        for p in self.temp_files():
            with contextlib.suppress(OSError):
                p.unlink()

    def save(self, index: Any, state: dict) -> tuple[int, str]:
        """Write ``index`` atomically, then put ``state`` with the file's size and checksum."""
        tmp = self.directory / f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            paths.create_private_file(tmp)  # hnswlib's writer keeps the mode of an existing file
            index.save_index(str(tmp))
            fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
            try:
                os.fsync(fd)
                size = os.fstat(fd).st_size
                if size != index.index_file_size():  # hnswlib does not check its writes
                    raise OSError(short_write_errno(fd, index.index_file_size() - size), "short write", str(tmp))
                checksum = checksum_fd(fd, size)
            finally:
                os.close(fd)
            with self.swap_lock(True, create=True):
                os.replace(tmp, self.path)
                fsync_dir(self.directory)
                self.source.put_ann_state(self.space, self.model_id, {**state, "file_size": size, "checksum": checksum})
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return size, checksum

    def remove(self, state: dict) -> None:
        """No file any more (an exact store): remove it, then put ``state``."""
        with self.swap_lock(True, create=True):
            if self.path.exists():
                self.path.unlink()
                fsync_dir(self.directory)
            self.source.put_ann_state(self.space, self.model_id, state)
