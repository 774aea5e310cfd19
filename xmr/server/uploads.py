"""Media queries sent to the server: capped, decoded in a sandbox, never stored.

An upload is written to a private temporary folder (0700, file 0600) only for
as long as its query runs, then deleted. Before the search process touches it,
a separate *spawned* worker process classifies it by content and decodes it
with the same decoders and limits as ``xmr index`` workers (content sniffing,
the decompression-bomb pixel limit, libsndfile, the text size cap): a file
that crashes or hangs a decoder takes that worker down, not the server.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmr import media
from xmr.errors import MediaError, UsageError
from xmr.procs import die_with_parent

DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024
DECODE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Upload:
    field: str  # image | audio | text_file | file (any kind, by content)
    filename: str  # as the client named it: shown in the results, never used as a path
    data: bytes
    weight: float = 1.0


def display_name(filename: str | None) -> str:
    """The client's name for an upload, safe to echo (no control characters, bounded length)."""
    name = re.sub(r"[\x00-\x1f\x7f]", "", filename or "") or "upload"
    return name[-200:]


def _load_only(path: str) -> Any:
    import numpy as np

    from xmr.preprocess.image import load_image

    load_image(path)
    return np.zeros((3, 1, 1), np.float32)


def _decode_check(path: str, expect: str | None, added: tuple[media.MediaKind, ...] = ()) -> str:
    """Runs in the sandbox worker: classify by content and decode fully; returns the query kind.
    ``added``: the server's registered media kinds beyond the built-in ones (xmr.media)."""
    c = media.classify_path(path, added)
    if c.reason:
        raise MediaError(c.reason)
    found = next((k for k in added if k.name == c.modality), None) or media.find(c.modality)
    kind = found.query_kind if found is not None else None
    if expect == "text_file":
        kind = "text_file"
    if kind is None:
        raise MediaError("not an image, audio or text")
    if expect not in (None, "file") and kind != expect:
        raise MediaError(f"expected {expect.replace('_', ' ')}, content is {c.modality}")
    if kind == "image":
        from xmr.preprocess.image import load_image

        load_image(path)
    elif kind == "audio":
        from xmr.preprocess.audio import load_audio, windows

        if not windows(load_audio(path)):
            raise MediaError("no audio to embed")
    elif kind != "text_file" and found is not None:
        # an added kind: its own decoder, images loaded in full but not preprocessed
        d = found.decode(path, media.DecodeContext(image_preprocessor=_load_only, query=True))
        if d.error or d.skip:
            raise MediaError(d.error or d.skip or "")
    else:
        from xmr.preprocess.text import normalise, read_text

        if not normalise(read_text(path)).strip():
            raise MediaError("query text file is empty")
    return kind


class Sandbox:
    """One spawned decoder process, restarted after a crash."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # die_with_parent: a server killed any way takes its decoder with it
                ctx = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=die_with_parent)
            return self._pool

    def _reset(self, failed: ProcessPoolExecutor | None = None) -> None:
        """Kill and drop the pool (only if it is still ``failed``: another request may have reset it)."""
        with self._lock:
            if failed is not None and self._pool is not failed:
                return
            pool, self._pool = self._pool, None
        if pool is not None:
            for proc in list(getattr(pool, "_processes", {}).values()):  # a hung decoder is killed
                with contextlib.suppress(Exception):
                    proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)

    def start(self) -> None:
        """Start the decoder process now, so the first upload does not wait for it."""
        self._get().submit(int)

    def check(self, path: str, expect: str | None, name: str) -> str:
        # a crash or a restart can come from another request's file sharing the worker: the second
        # try tells (this file crashes it again, or goes through on a fresh worker)
        for attempt in (1, 2):
            pool = self._get()
            try:
                return pool.submit(_decode_check, path, expect, media.snapshot()).result(timeout=DECODE_TIMEOUT_S)
            except MediaError as exc:
                raise MediaError(exc.reason, path=name) from None
            except (BrokenProcessPool, CancelledError):
                self._reset(pool)
                if attempt == 2:
                    raise MediaError("the decoder crashed on this file", path=name) from None
            except TimeoutError:
                self._reset(pool)
                raise MediaError(f"decoding took longer than {DECODE_TIMEOUT_S:g} s", path=name) from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._reset()


@contextlib.contextmanager
def staged(uploads: list[Upload], sandbox: Sandbox) -> Iterator[list[tuple[str, str, Upload]]]:
    """(kind, temporary path, upload) per upload, checked in the sandbox; all deleted on exit."""
    if not uploads:
        yield []
        return
    folder = tempfile.mkdtemp(prefix="xmr-upload-")  # 0700
    try:
        out = []
        for i, up in enumerate(uploads):
            fields = [*(k.query_kind for k in media.kinds() if k.query_kind), "file"]
            if up.field not in fields:
                raise UsageError(f"unknown upload field {up.field!r}; use {', '.join(fields[:-1])} or file")
            suffix = re.sub(r"[^A-Za-z0-9.]", "", Path(display_name(up.filename)).suffix)[:12]
            path = os.path.join(folder, f"q{i}{suffix}")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(up.data)
            kind = sandbox.check(path, None if up.field == "file" else up.field, display_name(up.filename))
            out.append((kind, path, up))
        yield out
    finally:
        shutil.rmtree(folder, ignore_errors=True)
