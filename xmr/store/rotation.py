"""Where the codes' rotation is kept, so it is learned once per (space, model).

The rotation (with the centre) is stored in the code file after its header; the catalogue's
settings (``codes_rotation:<space>:<model>``) version it: method, code length, digest and
when it was learned. A checkpoint reuses the recorded rotation while it is the one asked for,
so the codes of old and new vectors stay comparable; asking for another method or length
learns a new one (and rewrites every code).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from xmr.store.binary_file import CODE_HEADER, CODE_MAGIC, rotation_digest
from xmr.store.codes import learn_rotation

ROTATION_SETTING = "codes_rotation"  # settings key prefix: the rotation in use per (space, model)


def rotation_key(space: str, model_id: str) -> str:
    return f"{ROTATION_SETTING}:{space}:{model_id}"


class RotationRecord:
    """The recorded rotation of one (space, model) and its code file. ``source`` is the
    store's vector source at the time of the call (a warm server swaps it per generation)."""

    def __init__(self, space: str, model_id: str, codes_path: Path, dim: int) -> None:
        self.key = rotation_key(space, model_id)
        self.codes_path = codes_path
        self.dim = dim

    def recorded(self, source: Any) -> dict | None:
        """What the settings say (None: nothing, or not readable)."""
        get = getattr(source, "get_setting", None)
        raw = get(self.key) if callable(get) else None
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def choose(
        self, source: Any, prev: dict | None, sample: np.ndarray, bits: int, method: str
    ) -> tuple[np.ndarray, np.ndarray, str, float]:
        """(centre, rotation, method, learned_at): the recorded one, read back from the previous
        code file, while it is the one asked for; else one learned from ``sample``."""
        recorded = self.recorded(source)
        if (
            prev is not None
            and recorded is not None
            and recorded.get("digest") == prev.get("rotation_digest")
            and recorded.get("method") == method
            and int(recorded.get("bits", -1)) == bits
            and self.codes_path.exists()
        ):
            old = self._read(bits)
            if old is not None and rotation_digest(*old) == recorded["digest"]:
                return old[0], old[1], method, float(recorded.get("learned_at", 0.0))
        centre, rot = learn_rotation(sample, bits, method)
        return centre, rot, method, time.time()

    def record(self, source: Any, state: dict) -> None:
        """Version the rotation of a checkpoint's ``state`` in the settings (where the backend's name is)."""
        value = {
            "method": state["rotation"],
            "bits": state["bits"],
            "digest": state["rotation_digest"],
            "learned_at": state["rotation_learned_at"],
        }
        put = getattr(source, "set_setting", None)
        if self.recorded(source) == value or not callable(put):
            return
        transaction = getattr(source, "transaction", None)
        if callable(transaction):
            with transaction():
                put(self.key, json.dumps(value, sort_keys=True))
        else:
            put(self.key, json.dumps(value, sort_keys=True))

    def _read(self, bits: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(centre, rotation) stored in the code file, None when it does not hold them at this size."""
        size = CODE_HEADER.size + 4 * self.dim * (1 + bits)
        try:
            with open(self.codes_path, "rb") as f:
                raw = f.read(size)
        except OSError:
            return None
        if len(raw) < size:
            return None
        magic, dim, fbits, _, _ = CODE_HEADER.unpack_from(raw)
        if magic != CODE_MAGIC or (dim, fbits) != (self.dim, bits):
            return None
        body = np.frombuffer(raw, "<f4", offset=CODE_HEADER.size)
        return body[: self.dim].copy(), body[self.dim :].reshape(self.dim, bits).copy()
