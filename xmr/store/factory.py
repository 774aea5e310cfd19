"""Vector index backends by name: ``open_index("hnswlib", ...)``.

A backend is a factory registered under a name (``register_backend``); the
name an index uses is recorded in the catalogue's settings under
``BACKEND_SETTING``. A catalogue without that setting predates it and uses
``DEFAULT_BACKEND``, so old indexes open unchanged. A backend whose optional
package is missing raises ``BackendError`` saying what to install
(``require``), not an ImportError from deep inside a search.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xmr.store.base import BackendError, VectorIndex
from xmr.store.source import VectorSource

BACKEND_SETTING = "vector_backend"
URI_SETTING = "vector_store_uri"  # where a remote backend keeps the vectors (milvus://HOST:PORT, milvus-lite:PATH)
NAMESPACE_SETTING = "vector_store_namespace"  # this catalogue's prefix on a shared server
DEFAULT_BACKEND = "hnswlib"

# (directory, source, space, model_id, dim, **options) -> VectorIndex
BackendFactory = Callable[..., VectorIndex]
_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``open_index(name, ...)`` call ``factory``; a second registration replaces the first."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"backend name {name!r}: letters, digits, '-' and '_' only")
    _BACKENDS[name] = factory


def unregister_backend(name: str) -> None:
    _BACKENDS.pop(name, None)


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def index_backend(source: Any) -> str:
    """The backend the catalogue records (``DEFAULT_BACKEND`` when it records none)."""
    get = getattr(source, "get_setting", None)
    name = get(BACKEND_SETTING) if callable(get) else None
    return name or DEFAULT_BACKEND


def require(module: str, *, backend: str, install: str) -> None:
    """Raise BackendError naming ``install`` when ``module`` cannot be imported (it is not imported here)."""
    if importlib.util.find_spec(module) is None:
        raise BackendError(f"the {backend!r} vector index needs the Python package {module!r}: pip install {install}")


def open_index(
    backend: str, directory: Path, source: VectorSource, space: str, model_id: str, dim: int, **options: Any
) -> VectorIndex:
    """The vector index of (space, model) kept by ``backend`` under ``directory`` (opened lazily)."""
    factory = _BACKENDS.get(backend)
    if factory is None:
        known = ", ".join(backend_names()) or "none"
        raise BackendError(
            f"unknown vector index backend {backend!r} (this xmr knows: {known}); "
            "the index was written by another xmr version or with a backend that is not installed"
        )
    return factory(Path(directory), source, space, model_id, int(dim), **options)


def _hnswlib(directory: Path, source: VectorSource, space: str, model_id: str, dim: int, **options: Any) -> VectorIndex:
    require("hnswlib", backend="hnswlib", install="hnswlib")
    from xmr.store.hnsw import HnswStore

    return HnswStore(directory, source, space, model_id, dim, **options)


def store_spec(spec: str) -> tuple[str, str | None]:
    """``xmr index --store``: a backend name, ``milvus://HOST:PORT`` or ``milvus-lite:PATH`` -> (backend, uri)."""
    if spec.startswith("milvus://"):
        return "milvus", spec
    if spec.startswith("milvus-lite:"):
        path, mark, query = spec[len("milvus-lite:") :].partition("?")
        if not path.endswith(".db"):
            raise BackendError(f"--store {spec}: a milvus-lite database is a path ending in .db")
        return "milvus", "milvus-lite:" + str(Path(path).expanduser().resolve()) + mark + query
    return spec, None


def record_store(cat: Any, spec: str) -> None:
    """Record the backend (and its address) ``xmr index --store`` chose in the catalogue's settings."""
    import secrets

    backend, uri = store_spec(spec)
    if backend not in _BACKENDS:
        raise BackendError(f"unknown vector store {spec!r} (this xmr knows: {', '.join(backend_names())})")
    with cat.transaction():
        cat.set_setting(BACKEND_SETTING, backend)
        if uri:
            cat.set_setting(URI_SETTING, uri)
        if cat.get_setting(NAMESPACE_SETTING) is None:  # this catalogue's collections on a shared server
            cat.set_setting(NAMESPACE_SETTING, secrets.token_hex(4))


def _milvus(directory: Path, source: VectorSource, space: str, model_id: str, dim: int, **options: Any) -> VectorIndex:
    require("pymilvus", backend="milvus", install="'xmr[milvus]'")
    from xmr.store.milvus import MilvusIndex

    get = getattr(source, "get_setting", None)
    uri = options.pop("uri", None) or (get(URI_SETTING) if callable(get) else None)
    if not uri:
        raise BackendError(f"the catalogue names the milvus backend but no address ({URI_SETTING})")
    namespace = options.pop("namespace", None) or (get(NAMESPACE_SETTING) if callable(get) else None) or "xmr"
    return MilvusIndex(directory, source, space, model_id, dim, uri=uri, namespace=namespace, **options)


register_backend(DEFAULT_BACKEND, _hnswlib)
register_backend("milvus", _milvus)


def _binary(directory: Path, source: VectorSource, space: str, model_id: str, dim: int, **options: Any) -> VectorIndex:
    from xmr.store.binary import BinaryStore  # numpy only: no optional package

    return BinaryStore(directory, source, space, model_id, dim, **options)


register_backend("binary", _binary)
