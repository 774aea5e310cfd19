"""The files of the ``binary`` backend and whether they can be trusted.

Per (space, model), in the ann directory, two derived caches of the catalogue:

* ``<name>.f32``: a 64-byte header (magic, dim, count), the vectors as ``count``
  rows of ``dim`` float32, then their ids as ``count`` int64, ascending;
* ``<name>.codes``: a 64-byte header (magic, dim, bits, count, rotation method),
  the centre (``dim`` float32) and rotation (``dim`` x ``bits`` float32), padded
  to 8 bytes, then the codes word-major: ``words`` rows of ``count`` uint64.

The state row records both files' sizes and whole-file checksums, the rotation's
digest and method. Opening checks what is cheap, as for the hnswlib file: the
state row, the sizes, the headers, the rotation's digest, the newest ids
against the catalogue, and the codes of a few spread rows re-encoded from their
float32 vectors; the whole-file checksums are verified by a writer's open and
by ``xmr status --check``. A code file that fails leaves the float32 file in use
(search scans it exactly and says why); a float32 file that fails leaves both
unused (search answers exactly from the catalogue). Saving, locking and the
swap under ``<f32 file>.swap.lock`` are ``HnswFile``'s (``hnsw_file.py``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

from xmr import paths
from xmr.store.codes import encode, run_parts, words_for, workers_for
from xmr.store.fsutil import fsync_dir
from xmr.store.hnsw_file import HnswFile, checked_header, checksum_fd, index_file_name
from xmr.store.source import VectorSource

VEC_MAGIC = b"XMRF32v1"
CODE_MAGIC = b"XMRBINv1"
VEC_HEADER = struct.Struct("<8sIIQ40x")  # magic, dim, reserved, count
CODE_HEADER = struct.Struct("<8sIIQ8s32x")  # magic, dim, bits, count, method
SPOT_CHECKS = 32  # rows whose codes are re-encoded at open
READ_ROWS_PER_WORKER = 256  # rescored rows worth a thread of their own


def vec_layout(dim: int, count: int) -> tuple[int, int]:
    """(offset of the ids, file size) of a float32 file."""
    ids_at = VEC_HEADER.size + 4 * dim * count
    return ids_at, ids_at + 8 * count


def code_layout(dim: int, bits: int, count: int) -> tuple[int, int]:
    """(offset of the codes, file size) of a code file."""
    at = CODE_HEADER.size + 4 * dim * (1 + bits)
    at += -at % 8
    return at, at + 8 * words_for(bits) * count


def rotation_digest(centre: np.ndarray, rotation: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(centre, "<f4").tobytes())
    h.update(np.ascontiguousarray(rotation, "<f4").tobytes())
    return h.hexdigest()


class CodedVectors:
    """A float32 file mapped read-only, with the codes of its rows (None when unusable).

    Offers what ``LoadedView`` uses of an index (``get_ids_list``, ``get_items``,
    ``mark_deleted``); the search over it is ``binary.CodedSearch``'s.
    """

    def __init__(self, fd: int, size: int, dim: int) -> None:
        import mmap

        self._map = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        self._fd = os.dup(fd)  # rows are read with pread: mapping them would map whole folios
        magic, fdim, _, count = VEC_HEADER.unpack_from(self._map, 0)
        self.dim, self.count = int(fdim), int(count)
        ids_at, _ = vec_layout(self.dim, self.count)
        self.vecs = np.ndarray((self.count, self.dim), "<f4", buffer=self._map, offset=VEC_HEADER.size)
        self.ids = np.ndarray((self.count,), "<i8", buffer=self._map, offset=ids_at)
        self.codes: np.ndarray | None = None  # (words, count) uint64
        self.centre: np.ndarray | None = None
        self.rotation: np.ndarray | None = None
        self.codes_problem = "no code file"
        self._code_map: Any = None
        self._advise(ids_at)

    def _advise(self, ids_at: int) -> None:
        """Read the ids ahead (checked and used at open); fault the vectors in one page at a
        time: with codes only the rescored rows are read, and the kernel's readahead would
        otherwise pull ~128 KB per 2 KB row from a file far larger than the page cache."""
        import mmap

        advise = getattr(self._map, "madvise", None)
        if advise is None or not hasattr(mmap, "MADV_RANDOM"):
            return
        page = mmap.PAGESIZE
        with contextlib.suppress(OSError, ValueError):
            advise(mmap.MADV_RANDOM, 0, ids_at - ids_at % page)
            start = ids_at - ids_at % page
            advise(mmap.MADV_WILLNEED, start, len(self._map) - start)

    def sequential(self) -> None:
        """An exact scan reads every vector: let the kernel read ahead again."""
        import mmap

        advise = getattr(self._map, "madvise", None)
        if advise is not None and hasattr(mmap, "MADV_SEQUENTIAL"):
            with contextlib.suppress(OSError, ValueError):
                advise(mmap.MADV_SEQUENTIAL)

    def attach_codes(self, fd: int, size: int, bits: int) -> None:
        import mmap

        self._code_map = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        at, _ = code_layout(self.dim, bits, self.count)
        self.centre = np.ndarray((self.dim,), "<f4", buffer=self._code_map, offset=CODE_HEADER.size)
        self.rotation = np.ndarray(
            (self.dim, bits), "<f4", buffer=self._code_map, offset=CODE_HEADER.size + 4 * self.dim
        )
        self.codes = np.ndarray((words_for(bits), self.count), "<u8", buffer=self._code_map, offset=at)
        self.codes_problem = ""

    def drop_codes(self, why: str) -> None:
        self.codes = self.centre = self.rotation = None
        self.codes_problem = why
        self.sequential()
        if self._code_map is not None:
            with contextlib.suppress(BufferError):
                self._code_map.close()
            self._code_map = None

    def spot_check(self) -> str:
        """Why the codes of a few spread rows differ from their re-encoded vectors ("" if they agree)."""
        if self.codes is None or self.count == 0:
            return ""
        rows = np.unique(np.linspace(0, self.count - 1, min(SPOT_CHECKS, self.count)).astype(np.int64))
        try:
            vecs = self.read_rows(rows)
        except OSError as e:
            return f"float32 rows unreadable: {e}"
        want = encode(vecs, self.centre, self.rotation)  # type: ignore[arg-type]
        if not np.array_equal(want.T, self.codes[:, rows]):
            return "codes do not match their vectors (damaged or stale code file)"
        return ""

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """The float32 vectors of ``rows`` (ascending), (len(rows), dim).

        Read with pread after asking the kernel for all of them at once (their disk reads
        overlap), not through the map: a fault maps a whole page-cache folio, up to megabytes
        of the file for one 2 KB row, which a search's RSS then counts."""
        from xmr.store import hamming_kernel

        rows = np.ascontiguousarray(rows, np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        lib = hamming_kernel.load()
        if lib is None or self._fd < 0 or sys.byteorder != "little":
            out[:] = self.vecs[rows]
            return out
        # shares on the Hamming pool's threads: 2000 rows are 4000 system calls (ctypes releases the GIL)
        m, rowbytes = len(rows), 4 * self.dim
        workers = workers_for(None, m // READ_ROWS_PER_WORKER)
        step = -(-m // max(1, workers))
        why = [0] * workers

        def part(w: int) -> None:
            s, e = w * step, min(m, (w + 1) * step)
            if s < e:
                why[w] = lib.xmr_read_rows(self._fd, VEC_HEADER.size, rowbytes, rows.ctypes.data + 8 * s, e - s,
                                           out.ctypes.data + rowbytes * s)

        run_parts(part, workers)
        failed = next((int(x) for x in why if x), 0)
        if failed:
            raise OSError(failed if failed > 0 else errno.EIO, "reading the float32 rows failed")
        return out

    # -- the index surface LoadedView and HnswFile use ------------------------------------
    def get_ids_list(self) -> np.ndarray:
        return np.array(self.ids, dtype=np.int64)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Rows of ids (sorted file ids: a binary search), -1 where the file has none."""
        if self.count == 0:
            return np.full(len(ids), -1, np.int64)
        at = np.minimum(np.searchsorted(self.ids, ids), self.count - 1)
        return np.where(self.ids[at] == ids, at, -1)

    def get_items(self, ids: np.ndarray) -> np.ndarray:
        pos = self.positions(np.asarray(ids, np.int64))
        if (pos < 0).any():
            raise RuntimeError("Label not found")  # as hnswlib says it
        return np.array(self.vecs[pos], dtype=np.float32)

    def mark_deleted(self, label: int) -> None:
        """Nothing to mark: searches are given the live members."""

    def __del__(self) -> None:  # a view replaced by a reload is dropped, not closed: its fd goes here
        fd, self._fd = getattr(self, "_fd", -1), -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        self.drop_codes("closed")
        self.vecs = self.ids = None  # type: ignore[assignment]
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(BufferError):  # a caller still holds a view: the GC unmaps it later
            self._map.close()


class BinaryFile(HnswFile):
    """The float32 and code files of one (space, model) and their state row."""

    backend = "binary"

    def __init__(self, directory: Path, source: VectorSource, space: str, model_id: str, dim: int) -> None:
        super().__init__(directory, source, space, model_id, dim)
        stem = index_file_name(space, model_id).removesuffix(".hnsw")
        self.path = self.directory / f"{stem}.f32"
        self.codes_path = self.directory / f"{stem}.codes"

    def temp_files(self) -> list[Path]:
        return super().temp_files() + list(self.directory.glob(f".{self.codes_path.name}.*.tmp"))

    def fingerprint(self) -> str:
        ids = []
        for p in (self.path, self.codes_path):
            try:
                st = os.stat(p)
                ids.append([st.st_size, st.st_mtime_ns, st.st_ino])
            except OSError:
                ids.append([])
        return json.dumps([self.state(), ids], sort_keys=True, default=str)

    # -- trust ---------------------------------------------------------------------------
    def verify_fd(self, fd: int, size: int, state: dict, *, full: bool = False) -> str:
        if state.get("backend") != self.backend:
            return f"state row of the {state.get('backend') or 'hnswlib'} backend"
        raw, why = checked_header(
            fd, size, VEC_HEADER.size, size_want=state["file_size"], checksum_want=state.get("checksum"), full=full
        )
        if why:
            return why
        if len(raw) < VEC_HEADER.size:
            return "file shorter than its header"
        magic, dim, _, count = VEC_HEADER.unpack(raw)
        if magic != VEC_MAGIC:
            return "header is not an xmr float32 file"
        if dim != self.dim:
            return f"index holds {dim}-d vectors, expected {self.dim}"
        if count != int(state["element_count"]):
            return f"index holds {count} elements, state says {state['element_count']}"
        if size != vec_layout(dim, count)[1]:
            return "file size does not match its header"
        return ""

    def codes_check(self, fd: int, size: int, state: dict, *, full: bool) -> str:
        """Why the open code file does not match the state row ("" when it does)."""
        try:
            bits, count = int(state["bits"]), int(state["element_count"])
        except (KeyError, TypeError, ValueError):
            return "state row has no codes"
        raw, why = checked_header(
            fd,
            size,
            CODE_HEADER.size,
            size_want=state.get("codes_size"),
            checksum_want=state.get("codes_checksum"),
            full=full,
            name="code file",
        )
        if why:
            return why
        if len(raw) < CODE_HEADER.size:
            return "code file shorter than its header"
        magic, dim, fbits, fcount, method = CODE_HEADER.unpack(raw)
        if magic != CODE_MAGIC or (dim, fbits, fcount) != (self.dim, bits, count):
            return "code file header does not match the state row"
        if method.rstrip(b"\0").decode("ascii", "replace") != state.get("rotation"):
            return "code file rotation method does not match the state row"
        if size != code_layout(dim, bits, count)[1]:
            return "code file size does not match its header"
        return ""

    def _map_fd(self, fd: int, size: int, state: dict) -> tuple[Any, str]:
        try:
            index = CodedVectors(fd, size, self.dim)
        except (OSError, ValueError) as e:
            return None, f"could not map the file: {e}"
        ids = index.ids
        top = int(state["max_vector_id"])
        if index.count and (ids[0] < 0 or ids[-1] > top or not bool((ids[1:] > ids[:-1]).all())):
            index.close()
            return None, "index ids are not the catalogue's (unsorted, repeated or out of range)"
        why = self._attach_codes(index, state, full=self._full)
        if why:
            index.drop_codes(why)
        return index, ""

    _full = False

    def load_valid(self, *, full: bool, mapped: bool) -> tuple[Any, dict | None, str]:
        """(CodedVectors, state, "") for a sound float32 file (its codes attached when they are
        sound too, else ``codes_problem`` says why), else (None, state, why)."""
        self._full = full
        return super().load_valid(full=full, mapped=True)

    def _load_fd(self, fd: int, state: dict) -> tuple[Any, str]:  # pragma: no cover - load_valid always maps
        return self._map_fd(fd, os.fstat(fd).st_size, state)

    def _attach_codes(self, index: CodedVectors, state: dict, *, full: bool) -> str:
        """Map the code file into ``index``; "" when attached, else why not."""
        try:
            fd = os.open(self.codes_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            return "code file missing"
        except OSError as e:
            return f"code file unreadable: {e}"
        try:
            size = os.fstat(fd).st_size
            why = self.codes_check(fd, size, state, full=full)
            if why:
                return why
            index.attach_codes(fd, size, int(state["bits"]))
        except (OSError, ValueError) as e:
            return f"could not map the code file: {e}"
        finally:
            os.close(fd)
        if rotation_digest(index.centre, index.rotation) != state.get("rotation_digest"):  # type: ignore[arg-type]
            return "code file rotation does not match the state row"
        return index.spot_check()

    def full_check(self) -> str:
        """Both files against the state row, whole-file checksums included ("" when sound)."""
        why = super().full_check()
        if why:
            return why
        state = self.state()
        if state is None or state.get("file") is None:
            return ""
        try:
            fd = os.open(self.codes_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as e:
            return f"code file {self.codes_path.name}: {e.strerror or e}"
        try:
            return self.codes_check(fd, os.fstat(fd).st_size, state, full=True)
        finally:
            os.close(fd)

    def discard_if_damaged(self) -> bool:
        """Remove both files if, under the swap lock, they still fail ``full_check``."""
        with self.swap_lock(True, create=False):
            if not self.full_check():
                return False
            removed = False
            for p in (self.path, self.codes_path):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed = True
            return removed

    # -- writing -------------------------------------------------------------------------
    def temp_path(self, final: Path) -> Path:
        tmp = self.directory / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        paths.create_private_file(tmp)
        return tmp

    def commit(self, vec_tmp: Path, code_tmp: Path, state: dict) -> dict:
        """fsync and checksum both written files, swap them in, put ``state`` with sizes and checksums."""
        state = dict(state)
        for tmp, size_key, sum_key in ((vec_tmp, "file_size", "checksum"), (code_tmp, "codes_size", "codes_checksum")):
            fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
            try:
                os.fsync(fd)
                size = os.fstat(fd).st_size
                state[size_key], state[sum_key] = size, checksum_fd(fd, size)
            finally:
                os.close(fd)
        with self.swap_lock(True, create=True):
            os.replace(vec_tmp, self.path)
            os.replace(code_tmp, self.codes_path)
            fsync_dir(self.directory)
            self.source.put_ann_state(self.space, self.model_id, state)
        return state

    def remove(self, state: dict) -> None:
        """No files any more (an exact store): remove them, then put ``state``."""
        with self.swap_lock(True, create=True):
            gone = False
            for p in (self.path, self.codes_path):
                if p.exists():
                    p.unlink()
                    gone = True
            if gone:
                fsync_dir(self.directory)
            self.source.put_ann_state(self.space, self.model_id, state)
