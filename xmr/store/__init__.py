"""Vector indexes: the ``VectorIndex`` protocol, its backends by name, and the hnswlib backend.

See docs/architecture-store.md. Importing this package imports no backend.
"""

from __future__ import annotations

from xmr.store.base import BackendError, VectorIndex
from xmr.store.factory import (
    BACKEND_SETTING,
    DEFAULT_BACKEND,
    backend_names,
    index_backend,
    open_index,
    register_backend,
    unregister_backend,
)
from xmr.store.source import VectorSource

__all__ = [
    "BACKEND_SETTING",
    "DEFAULT_BACKEND",
    "BackendError",
    "VectorIndex",
    "VectorSource",
    "backend_names",
    "index_backend",
    "open_index",
    "register_backend",
    "unregister_backend",
]
