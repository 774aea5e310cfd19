"""Encoder registry: space name -> backend, imported lazily.

Nothing here imports torch; a backend module does so when it is loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from xmr.errors import UsageError
from xmr.spaces import INFO, model_spec

if TYPE_CHECKING:
    from xmr.encoders.base import Encoder, ModelStatus
    from xmr.settings import Settings

# space -> "module:factory". A factory takes (settings) and returns an Encoder;
# it may also expose ``status(settings) -> ModelStatus`` and ``download(settings)``.
BACKENDS: dict[str, str] = {name: info.backend for name, info in INFO.items()}


def _factory(space: str, settings: Settings) -> Callable[..., Encoder]:
    spec = settings.backends.get(space) or BACKENDS.get(space)
    if spec is None:
        raise UsageError(f"unknown embedding space {space!r}; known: {', '.join(sorted(BACKENDS))}")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"cannot load encoder backend {spec!r} for space {space!r}: {exc}") from exc


# the last encoder loaded per space, so a process that indexes and then searches
# (or runs many searches through the library) loads each model once
_LOADED: dict[str, tuple[tuple[object, ...], Encoder]] = {}


def _cache_key(space: str, settings: Settings) -> tuple[object, ...]:
    spec = model_spec(settings, space)
    backend = settings.backends.get(space)
    return (backend, spec, settings.device, settings.batch_size, settings.offline, settings.precision)


def load_encoder(space: str, settings: Settings, *, reuse: bool = True) -> Encoder:
    """Build the encoder for ``space`` as configured (loads weights; may be slow).

    With ``reuse`` the encoder last built for the same space and settings is
    returned again.
    """
    key = _cache_key(space, settings)
    if reuse and space in _LOADED and _LOADED[space][0] == key:
        return _LOADED[space][1]
    _LOADED.pop(space, None)  # free the old model before loading another
    encoder = _factory(space, settings)(settings)
    if reuse:
        _LOADED[space] = (key, encoder)
    return encoder


def release(space: str | None = None) -> int:
    """Forget the encoders kept for reuse (one space, or all) so their memory can go; returns how many."""
    spaces = [space] if space is not None else list(_LOADED)
    return sum(_LOADED.pop(s, None) is not None for s in spaces)


def honours_precision(space: str, settings: Settings) -> bool:
    """Whether the backend of ``space`` runs at ``settings.precision`` and tags its model ids
    (xmr.encoders.precision): the built-in ones do; a custom one says so with a class
    attribute ``honours_precision = True``."""
    if space not in settings.backends:
        return True
    return bool(getattr(_factory(space, settings), "honours_precision", False))


def model_status(space: str, settings: Settings) -> ModelStatus:
    """Where the configured model's weights resolve from, without loading them."""
    return _factory(space, settings).status(settings)


def download_model(space: str, settings: Settings) -> ModelStatus:
    return _factory(space, settings).download(settings)
