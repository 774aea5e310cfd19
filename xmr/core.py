"""Library entry points behind the read-only and maintenance commands.

Each function opens the catalogue, does one thing and returns plain data (dicts
and lists) that the CLI renders; none of them prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from xmr import __version__, paths
from xmr.catalogue import Catalogue, path_key
from xmr.errors import NoIndex, PathNotFound
from xmr.lock import index_lock


def status(index_dir: Path | None = None) -> dict[str, Any]:
    index_dir = index_dir or paths.index_dir()
    out: dict[str, Any] = {"index": str(index_dir), "xmr_version": __version__, "exists": False}
    if not paths.catalogue_path(index_dir).exists():
        return out
    with Catalogue.open(index_dir, readonly=True) as cat:
        out["exists"] = True
        out.update(cat.summary())
        out["models"] = cat.models()
        out["last_run"] = cat.last_run("index")
        ann = paths.ann_dir(index_dir)
        out["ann_bytes"] = sum(p.stat().st_size for p in ann.glob("*") if p.is_file()) if ann.exists() else 0
        from xmr.store.policy import codes_status

        out["vector_index"] = codes_status(cat)
    return out


def check(index_dir: Path | None = None) -> dict[str, Any]:
    """Full integrity check (``xmr status --check``): the catalogue, every vector, every ANN file.

    Returns ``{"ok", "problems", "checked"}``. An ANN file that fails its
    checksum is a damaged cache: it is removed (when the directory allows),
    so searches answer exactly from the catalogue until the next ``xmr index``
    rebuilds it.
    """
    import numpy as np

    from xmr.store import index_backend, open_index

    index_dir = index_dir or paths.index_dir()
    problems: list[str] = []
    checked: dict[str, Any] = {"vectors": 0, "ann_files": 0}
    with Catalogue.open(index_dir, readonly=True) as cat:
        result = cat.integrity_check()
        checked["integrity_check"] = result
        if result != "ok":
            problems.append(f"catalogue: PRAGMA integrity_check says {result}")
        for model in cat.models():
            space, model_id, dim = model["space"], model["id"], int(model["dim"])
            bad = 0
            for ids, vecs in cat.iter_vectors(space, model_id):
                checked["vectors"] += len(ids)
                norms = np.linalg.norm(vecs, axis=1)
                bad += int(np.count_nonzero(~np.isfinite(vecs).all(axis=1) | (np.abs(norms - 1.0) > 1e-3)))
            if bad:
                problems.append(f"{space} {model_id}: {bad} vectors not finite or not unit-norm")
            store = open_index(index_backend(cat), paths.ann_dir(index_dir), cat, space, model_id, dim, readonly=True)
            if not store.persisted() and cat.get_ann_state(space, model_id) is None:
                continue
            checked["ann_files"] += 1
            why = store.verify()
            if why:
                note = ""
                if store.persisted():
                    try:
                        if store.discard_if_damaged():
                            note = "; removed it (a cache: searches answer exactly until 'xmr index' rebuilds it)"
                        else:  # an index run replaced it meanwhile
                            note = "; it has been replaced since by a sound one"
                    except OSError:
                        note = "; run 'xmr index' to rebuild it"
                problems.append(f"{space} vector index {store.label}: {why}{note}")
    return {"ok": not problems, "problems": problems, "checked": checked}


def prepare_query_encoders(index_dir: Path | None, settings: Any) -> dict[str, list[str]]:
    """Export the per-tower query encoders of the index's active models, and embed the bridge
    concepts with them, so no later search prepares anything (``xmr models prepare``)."""
    from xmr import bridge
    from xmr.encoders.query import QueryEncoders, prepare
    from xmr.spaces import SPACES

    out: dict[str, list[str]] = {}
    with Catalogue.open(index_dir or paths.index_dir(), readonly=True) as cat:
        rows = [cat.model_row(m) for m in (cat.active_model(s) for s in SPACES) if m]
        for row in rows:
            assert row is not None
            out[row["id"]] = prepare(row["space"], row, settings)
        # cached per model in the models dir: the first bridged search finds them there
        encoders, concepts = QueryEncoders(cat, settings), bridge.load_concepts()
        for row in rows:
            assert row is not None
            bridge.concept_matrix(cat, encoders.get(row["space"]), concepts, writable=False)
    return out


def errors(index_dir: Path | None = None) -> list[dict[str, Any]]:
    with Catalogue.open(index_dir or paths.index_dir(), readonly=True) as cat:
        return cat.errors()


def info(path: str | os.PathLike[str], index_dir: Path | None = None) -> dict[str, Any]:
    abspath = os.path.abspath(os.path.expanduser(os.fspath(path)))
    with Catalogue.open(index_dir or paths.index_dir(), readonly=True) as cat:
        found = cat.file_info(abspath)
        if found is not None:
            found["metadata"] = cat.file_meta(found["id"])
            found["ocr"] = cat.ocr_info(found["hash"])
    if found is None:
        raise NoIndex("not in the index", path=path_key(abspath)[0], hint="run 'xmr index' on its folder")
    if found["ocr"] is not None:
        _ocr_lines_text(abspath, found)
    from datetime import UTC, datetime

    found["modified"] = datetime.fromtimestamp(found["mtime_ns"] / 1e9, UTC).isoformat(timespec="seconds")
    return found


# lines of recognised text `xmr info` reads again when their text is not stored
INFO_OCR_LINES = 200


def _ocr_lines_text(path: str, found: dict[str, Any]) -> None:
    """The recognised lines' text for `xmr info`: stored (--store-snippets), else read again from
    the file's stored boxes (the recogniser only) while the file is as indexed."""
    ocr = found["ocr"]
    lines = ocr["lines"]
    if not lines or all(ln["text"] is not None for ln in lines):
        ocr["text_source"] = "stored" if lines else None
        return
    try:
        st = os.stat(path)
        unchanged = (st.st_size, st.st_mtime_ns) == (found["size"], found["mtime_ns"])
    except OSError:
        unchanged = False
    if not unchanged:
        ocr["text_source"] = "not stored; the file changed since indexing"
        return
    from xmr.ocr.snippets import read_again

    shown = lines[:INFO_OCR_LINES]
    try:
        texts = read_again(path, shown, ocr["settings"])
    except Exception as exc:  # shown without text, and why
        ocr["text_source"] = f"not stored; reading again failed: {' '.join(str(exc).split())}"
        return
    for ln, text in zip(shown, texts, strict=True):
        ln["text"] = text
    more = f" (the first {INFO_OCR_LINES} lines)" if len(lines) > INFO_OCR_LINES else ""
    ocr["text_source"] = f"not stored; read again from the file's line boxes{more}"


def remove(targets: list[str], index_dir: Path | None = None) -> dict[str, Any]:
    """Forget files (a folder: everything under it). Their vectors go unless another path has the content."""
    index_dir = index_dir or paths.index_dir()
    with index_lock(index_dir):
        notice = paths.tighten_index_modes(index_dir)
        with Catalogue.open(index_dir) as cat:
            result = _remove(cat, targets)
    if notice:
        result["notice"] = notice
    return result


def _remove(cat: Catalogue, targets: list[str]) -> dict[str, Any]:
    ids: list[int] = []
    missing: list[str] = []
    for t in targets:
        abspath = os.path.abspath(os.path.expanduser(t))
        rows = cat.files_under(abspath)
        if not rows:
            missing.append(t)
        ids.extend(r.id for r in rows.values())
    if missing and not ids:
        raise PathNotFound("not in the index", path=missing[0])
    with cat.transaction():
        removed = cat.delete_files(sorted(set(ids)))
    return {"removed": removed, "not_indexed": missing}
