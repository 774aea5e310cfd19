"""``xmr dupes``: near-duplicate images (bursts, resized, recompressed, slightly cropped copies)
and audio re-encodes, found from the stored vectors. Lists only; deletes nothing.

1. Candidates: each file's nearest neighbours in its space (the vector index, restricted to the
   group's vector ids), kept when the cosine reaches the threshold.
2. Check: images by a difference hash (dHash, 64 bits, Pillow + numpy) of both files, which
   must lie within ``DHASH_MAX_BITS``: two photos of the same kind of scene can be close in
   CLIP's space without being copies. Audio by its windows: the mean cosine of the windows at
   the same offsets, so a re-encode matches and a song that only shares an intro does not.
3. Groups: the connected pairs (union-find); paths sharing one content are one group too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmr import paths
from xmr.catalogue import Catalogue
from xmr.errors import UsageError

# default cosine thresholds, by type (the file-level cosine of the candidates)
IMAGE_COSINE = 0.90
AUDIO_COSINE = 0.95
DHASH_MAX_BITS = 12  # of 64: resizing, JPEG quality 70 and a 2 % crop stay well within
NEIGHBOURS = 10  # per file: a burst bigger than this still joins through its members' lists
TYPES = {"image": ("clip", "image"), "audio": ("clap", "audio_window")}


@dataclass
class DupeGroup:
    modality: str
    files: list[dict[str, Any]] = field(default_factory=list)  # path, similarity to the first, bits

    def as_dict(self) -> dict[str, Any]:
        return {"modality": self.modality, "files": self.files}


def dhash(path: str, size: int = 8) -> int:
    """Difference hash: a (size+1) x size grey thumbnail, one bit per horizontal step."""
    from xmr.preprocess.image import load_image

    img = load_image(path).convert("L").resize((size + 1, size))
    a = np.asarray(img, dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


class _Union:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def find_dupes(
    *,
    index_dir: Path | None = None,
    types: Sequence[str] = ("image", "audio"),
    threshold: float | None = None,
) -> list[DupeGroup]:
    """Groups of near-duplicate files, biggest first; see the module docstring."""
    bad = set(types) - set(TYPES)
    if bad:
        raise UsageError(f"--type: {sorted(bad)[0]!r}; choose image or audio")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise UsageError("--threshold is a cosine similarity, between -1 and 1")
    out: list[DupeGroup] = []
    with Catalogue.open(index_dir or paths.index_dir(), readonly=True) as cat:
        for modality in types:
            out.extend(_Finder(cat, modality, threshold).groups())
    return sorted(out, key=lambda g: (-len(g.files), g.files[0]["path"]))


class _Finder:
    """Near duplicates of one type."""

    def __init__(self, cat: Catalogue, modality: str, threshold: float | None):
        self.cat = cat
        self.modality = modality
        self.space, self.kind = TYPES[modality]
        self.threshold = threshold if threshold is not None else (IMAGE_COSINE if modality == "image" else AUDIO_COSINE)
        self.files: dict[str, list[tuple[str, str]]] = {}
        self._hashes: dict[str, int | None] = {}  # dHash by content

    def groups(self) -> list[DupeGroup]:
        model_id = self.cat.active_model(self.space)
        if not model_id:
            return []
        ids = self.cat.group_vector_ids(self.space, model_id, self.kind)
        if not len(ids):
            return []
        refs = self.cat.segments_for_vectors(ids.tolist())
        files = self.cat.files_for_hashes({r.hash for r in refs.values()})
        files = {h: [(p, m) for p, m, _ in rows if m == self.modality] for h, rows in files.items()}
        files = {h: rows for h, rows in files.items() if rows}
        self.files = files
        # per content: its vectors by window (an image has one)
        windows: dict[str, dict[int, int]] = {}
        for vid, ref in refs.items():
            if ref.hash in files:
                windows.setdefault(ref.hash, {})[ref.seq] = vid
        vectors = self.cat.vectors_by_id([vid for w in windows.values() for vid in w.values()])
        union = _Union()
        for h in files:
            union.find(h)
        pairs: dict[tuple[str, str], float] = {}
        for a, b, cos in self._candidates(model_id, ids, windows, vectors, refs):
            if (a, b) in pairs or not self._same(a, b, windows, vectors, files):
                continue
            pairs[(a, b)] = cos
            union.union(a, b)
        by_root: dict[str, list[str]] = {}
        for h in files:
            by_root.setdefault(union.find(h), []).append(h)
        out = []
        for members in by_root.values():
            paths_ = [(p, h) for h in members for p, _ in files[h]]
            if len(paths_) < 2:
                continue
            out.append(self._group(sorted(paths_), windows, vectors))
        return out

    def _candidates(
        self,
        model_id: str,
        ids: np.ndarray,
        windows: dict[str, dict[int, int]],
        vectors: dict[int, np.ndarray],
        refs: dict[int, Any],
    ) -> list[tuple[str, str, float]]:
        """(hash a, hash b, cosine), a < b: each content's neighbours by its first vector."""
        from xmr.store import index_backend, open_index

        hashes = sorted(windows)
        first = [windows[h][min(windows[h])] for h in hashes]
        q = np.stack([vectors[v] for v in first]).astype(np.float32)
        first_ids = np.sort(np.asarray(first, dtype=np.int64))
        store = open_index(
            index_backend(self.cat), paths.ann_dir(self.cat.index_dir), self.cat, self.space, model_id,
            q.shape[1], readonly=True,
        )  # fmt: skip
        try:
            out = []
            for start in range(0, len(q), 1024):
                nn_ids, sims = store.search(q[start : start + 1024], NEIGHBOURS + 1, candidate_ids=first_ids)
                for i, (row_ids, row_sims) in enumerate(zip(nn_ids, sims, strict=True)):
                    a = hashes[start + i]
                    for vid, sim in zip(row_ids.tolist(), row_sims.tolist(), strict=True):
                        ref = refs.get(int(vid))
                        if ref is None or ref.hash == a or sim < self.threshold:
                            continue
                        out.append((min(a, ref.hash), max(a, ref.hash), float(sim)))
            return out
        finally:
            with contextlib.suppress(Exception):
                store.close()

    def _same(
        self,
        a: str,
        b: str,
        windows: dict[str, dict[int, int]],
        vectors: dict[int, np.ndarray],
        files: dict[str, list[tuple[str, str]]],
    ) -> bool:
        if self.modality == "image":
            return self._bits(a, b, files) <= DHASH_MAX_BITS
        wa, wb = windows[a], windows[b]
        if abs(len(wa) - len(wb)) > 1:  # a re-encode keeps the length
            return False
        common = sorted(set(wa) & set(wb))
        sims = [float(np.dot(vectors[wa[s]], vectors[wb[s]])) for s in common]
        return bool(sims) and float(np.mean(sims)) >= self.threshold

    def _dhash_of(self, h: str, files: dict[str, list[tuple[str, str]]]) -> int | None:
        if h not in self._hashes:
            self._hashes[h] = None
            for path, _ in files[h]:
                with contextlib.suppress(Exception):  # gone or unreadable: try another copy
                    self._hashes[h] = dhash(path)
                    break
        return self._hashes[h]

    def _bits(self, a: str, b: str, files: dict[str, list[tuple[str, str]]]) -> int:
        da, db = self._dhash_of(a, files), self._dhash_of(b, files)
        return 64 if da is None or db is None else hamming(da, db)

    def _group(
        self, members: list[tuple[str, str]], windows: dict[str, dict[int, int]], vectors: dict[int, np.ndarray]
    ) -> DupeGroup:
        """The group, its first file first and each file's cosine to it (same offsets for audio)."""
        path0, h0 = members[0]
        g = DupeGroup(self.modality)
        for path, h in members:
            w0, w = windows[h0], windows[h]
            common = sorted(set(w0) & set(w)) or [min(w)]
            sim = float(np.mean([np.dot(vectors[w0.get(s, w0[min(w0)])], vectors[w[s]]) for s in common]))
            entry: dict[str, Any] = {"path": path, "similarity": round(sim, 4)}
            if self.modality == "image" and h != h0:
                entry["dhash_bits"] = self._bits(h0, h, self.files)
            elif h == h0 and path != path0:
                entry["identical"] = True
            g.files.append(entry)
        return g
