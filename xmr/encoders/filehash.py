"""The sha256 of a weights file, remembered so a model's identity costs no rehash.

Shared by the backends (CLIP and CLAP name their checkpoints by it); imports
nothing heavy and nothing of xmr but its paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path

from xmr.paths import models_dir

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_sha_lock = threading.Lock()
_sha_memo: dict[str, str] = {}


def _sha_cache_file() -> Path:
    return models_dir() / "sha256-cache.json"


def file_sha256(path: Path, *, compute: bool = True) -> str | None:
    """SHA-256 of a weights file, remembered by (real path, size, mtime).

    Files in the Hugging Face cache are stored under their LFS sha256, which
    is free to read. Otherwise the hash is computed once and kept in xmr's
    models dir; ``compute=False`` returns only what is already known.
    """
    real = Path(os.path.realpath(path))
    if _SHA_RE.fullmatch(real.name) and real.parent.name == "blobs":
        return real.name
    st = real.stat()
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    with _sha_lock:
        if key in _sha_memo:
            return _sha_memo[key]
        try:
            stored = json.loads(_sha_cache_file().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = {}
        if isinstance(stored, dict) and isinstance(stored.get(key), str):
            _sha_memo[key] = stored[key]
            return stored[key]
        if not compute:
            return None
        h = hashlib.sha256()
        with open(real, "rb") as fh:
            for chunk in iter(lambda: fh.read(8 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        _sha_memo[key] = digest
        stored = stored if isinstance(stored, dict) else {}
        stored[key] = digest
        try:  # a read-only cache dir only costs a recomputation next time
            target = _sha_cache_file()
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(stored, indent=0), encoding="utf-8")
            os.replace(tmp, target)
        except OSError:
            pass
        return digest
