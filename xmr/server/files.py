"""Indexed files by catalogue id: the original, a thumbnail or playable audio, with HTTP Range.

Only a file the catalogue lists as indexed is ever opened, and only by the
path recorded there: requests carry an integer id, never a path. Before a byte
is sent the file must still be what was indexed:

* opened with ``O_NOFOLLOW`` (a symlink put in its place is refused) and it
  must be a regular file;
* its real path must lie under the root it was indexed from (a folder
  swapped for a symlink that leads elsewhere is refused);
* size and mtime must match the catalogue row (a changed file is "changed
  since indexing" until it is indexed again).

Derived files live in the index dir, keyed by content hash and never by name:
``thumbnails/`` (EXIF-rotated JPEGs) and ``audio/`` (16-bit WAV of the exact
48 kHz mono signal the audio windows were cut from, so a window's ``start_s``
is the same instant in the player). Both folders are 0700, files 0600.
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from xmr import media, paths
from xmr.catalogue import fs_path
from xmr.catalogue.connection import connect
from xmr.errors import MediaError, NoIndex, XmrError

THUMB_SIZE = 320
KINDS = ("original", "thumb", "audio")
_CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d{0,18})-(\d{0,18})$")  # longer numbers: not a range we serve


class FileChanged(XmrError):
    """The file on disk is no longer what was indexed (or is not safe to open)."""


@dataclass(frozen=True)
class IndexedFile:
    id: int
    path: str  # the OS path
    root: str
    size: int
    mtime_ns: int
    hash: str
    modality: str


class FileLookup:
    """``files`` rows by id through one read-only connection per thread."""

    def __init__(self, index_dir: Path):
        self.index_dir = Path(index_dir)
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            db = paths.catalogue_path(self.index_dir)
            conn = connect(db, readonly=True)
            self._local.conn = conn
        return conn

    def get(self, file_id: int) -> IndexedFile:
        row = (
            self._conn()
            .execute(
                "SELECT id, path, path_bytes, root, size, mtime_ns, hash, modality FROM files"
                " WHERE id = ? AND status = 'indexed' AND hash IS NOT NULL",
                (int(file_id),),
            )
            .fetchone()
        )
        if row is None:
            raise NoIndex(f"no indexed file with id {int(file_id)}")
        return IndexedFile(row[0], fs_path(row[1], row[2]), row[3], row[4], row[5], row[6], row[7])

    def ids_for_paths(self, paths_: list[str]) -> dict[str, int]:
        """Catalogue ids of indexed files by their catalogue path (for the search results)."""
        out: dict[str, int] = {}
        for i in range(0, len(paths_), 500):
            chunk = paths_[i : i + 500]
            marks = ",".join("?" * len(chunk))
            # "+status" keeps SQLite on the path index instead of walking files_status (every indexed row)
            for fid, path in self._conn().execute(
                f"SELECT id, path FROM files WHERE +status = 'indexed' AND path IN ({marks})", chunk
            ):
                out[path] = int(fid)
        return out


def open_verified(f: IndexedFile) -> int:
    """An fd on the indexed file, after the checks in the module docstring."""
    try:
        fd = os.open(f.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise FileChanged(f"cannot open: {exc.strerror or exc}", path=f.path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileChanged("not a regular file", path=f.path)
        real, root = os.path.realpath(f.path), os.path.realpath(f.root)
        if real != root and not real.startswith(root.rstrip("/") + "/"):
            raise FileChanged("resolves outside its indexed folder", path=f.path)
        if st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
            raise FileChanged("changed since indexing", path=f.path, hint="run 'xmr index' again")
        return fd
    except BaseException:
        os.close(fd)
        raise


def media_type(f: IndexedFile) -> str:
    """What the original is served as: its media kind says (xmr.media)."""
    kind = media.find(f.modality)
    return kind.mime(f.path) if kind is not None else "application/octet-stream"


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def thumbnail(index_dir: Path, f: IndexedFile, fd: int, at_s: float = 0.0) -> Path:
    """The cached JPEG thumbnail of an indexed image (made from the verified fd on first use);
    of a timed kind (video), the frame shown at ``at_s`` seconds (to the tenth)."""
    import io

    kind = media.find(f.modality)
    if kind is None or "thumb" not in kind.previews or kind.thumbnail is None:
        raise MediaError("not an image", path=f.path)
    timed = bool(kind.extra.get("timed"))
    at = f"-{round(at_s * 10)}" if timed else ""
    out = _private_dir(Path(index_dir) / "thumbnails") / f"{f.hash}-{THUMB_SIZE}{at}.jpg"
    if not out.exists():
        # decoders that hand the file to a helper by name (Ghostscript for EPS) need a path:
        # /proc/PID/fd/N names the verified fd itself, for this process and its helpers
        # (not /proc/self, which a helper would read as its own); the indexed name tells RAW apart
        proc = f"/proc/{os.getpid()}/fd/{fd}"
        when = {"at_s": round(at_s * 10) / 10} if timed else {}
        if os.path.exists(proc):
            img = kind.thumbnail(proc, THUMB_SIZE, f.path, **when)  # upright: EXIF orientation applied
        else:
            with os.fdopen(os.dup(fd), "rb") as fh:
                img = kind.thumbnail(fh, THUMB_SIZE, f.path, **when)
        img.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        _write_private(out, buf.getvalue())
    return out


def playable_audio(index_dir: Path, f: IndexedFile, fd: int) -> Path:
    """The cached WAV of an indexed audio file: the decoded signal the windows were cut from."""
    import io

    import numpy as np
    import soundfile as sf

    from xmr.preprocess.audio import SAMPLE_RATE, load_audio

    kind = media.find(f.modality)
    if kind is None or "audio" not in kind.previews:
        raise MediaError("not audio", path=f.path)
    out = _private_dir(Path(index_dir) / "audio") / f"{f.hash}.wav"
    if not out.exists():
        signal = load_audio(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else load_audio(f.path)
        buf = io.BytesIO()
        sf.write(buf, np.asarray(signal, dtype=np.float32), SAMPLE_RATE, format="WAV", subtype="PCM_16")
        _write_private(out, buf.getvalue())
    return out


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive
    partial: bool

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> ByteRange:
    """One ``bytes=`` range (RFC 9110); anything else (several ranges, other units) is the whole file."""
    whole = ByteRange(0, size - 1, False)
    if not header:
        return whole
    m = _RANGE.match(header.strip())
    if m is None:
        return whole
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return whole
    if first == "":  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable
        return ByteRange(max(0, size - n), size - 1, True)
    start = int(first)
    if last and int(last) < start:  # an invalid range-spec is ignored (RFC 9110 14.2), not refused
        return whole
    end = min(int(last), size - 1) if last else size - 1
    if start >= size:
        raise RangeNotSatisfiable
    return ByteRange(start, end, True)


def iter_fd(fd: int, r: ByteRange) -> Iterator[bytes]:
    """The bytes of ``r`` from ``fd``; closes it when done (or abandoned)."""
    try:
        off, left = r.start, r.length
        while left > 0:
            piece = os.pread(fd, min(_CHUNK, left), off)
            if not piece:
                return
            off += len(piece)
            left -= len(piece)
            yield piece
    finally:
        os.close(fd)
