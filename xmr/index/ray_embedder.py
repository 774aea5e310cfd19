"""``xmr index --executor ray[://ADDRESS]``: decoding and embedding on a Ray cluster.

The driver (this process) walks, hashes and triages as in a local run and alone
writes the catalogue. Files whose content still lacks vectors go in small chunks to
one ``_EmbedActor`` per node, which holds the models of every space the run uses
(loaded once per actor), decodes the files and embeds them; decoded pixels and
audio never travel back, only the segments and vectors do. Results stream back as
chunks finish, in any order.

How files reach the workers (``transfer``):

* ``"path"`` (the default): workers open the file by its path, which must be the
  same on every node (shared storage: NFS, a cluster file system, one machine);
* ``"bytes"``: the driver sends the file's bytes (files up to ``BYTES_LIMIT``; larger
  ones go by path) and the worker decodes a private temporary copy.

A worker killed mid-run loses nothing and duplicates nothing: its actor is restarted
(``max_restarts``) and the calls it had are retried (``max_task_retries``); the calls
are pure (decode and embed, no writes), and the driver commits a file once, when its
result arrives. A chunk that fails for good marks its files failed, with the reason,
as a decoding error would.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import Any

from xmr.index.decode import decode, identify
from xmr.index.embed import Embedded, Encoding, LocalEmbedder, encode_space
from xmr.index.items import DecodeConfig, Triage, _Item, _Prepared, wanted_spaces
from xmr.index.options import IndexOptions
from xmr.settings import Settings

BYTES_LIMIT = 64 * 1024 * 1024  # transfer="bytes": larger files are read by path
CHUNK_FILES = 8  # files per actor call: enough to batch the encoders, small enough to stream
IN_FLIGHT_PER_ACTOR = 3  # calls queued per actor: one running, the next ones ready
MAX_RETRIES = 4  # restarts of a dead actor, and retries of the calls it held

# (prepared without its decoded arrays, encodings by space, failure reason by space)
_Result = tuple[_Prepared, dict[str, Encoding], dict[str, str]]


class _EmbedActor:
    """One per node: the run's models, loaded once, decoding and embedding chunks of files."""

    def __init__(self, settings: Settings, store_snippets: bool) -> None:
        self.settings, self.store_snippets = settings, store_snippets
        self.encoders: dict[str, Any] = {}

    def pid(self) -> int:
        return os.getpid()

    def process(
        self,
        chunk: list[tuple[_Prepared, bytes | None]],
        config: DecodeConfig,
        spaces: list[str],
        spaces_for: Mapping[str, Sequence[str]],
    ) -> list[_Result]:
        from xmr.encoders.engine import index_encoder

        for space in spaces:
            if space not in self.encoders:
                self.encoders[space] = index_encoder(space, self.settings)
        batch = [self._decode(p, data, config) for p, data in chunk]
        failed_by_space: dict[str, dict[int, str]] = {}
        encodings: dict[tuple[str, str], Encoding] = {}
        for space in spaces:
            failed_by_space[space] = {}
            encodings.update(
                encode_space(
                    space,
                    self.encoders[space],
                    batch,
                    spaces_for,
                    failed_by_space[space],
                    store_snippets=self.store_snippets,
                )
            )
        out = []
        for i, p in enumerate(batch):
            mine = {s: e for (h, s), e in encodings.items() if h == p.hash}
            fails = {s: f[i] for s, f in failed_by_space.items() if i in f}
            out.append((replace(p, pixels=None, audio_windows=None, text=None, head=None), mine, fails))
        return out

    @staticmethod
    def _decode(p: _Prepared, data: bytes | None, config: DecodeConfig) -> _Prepared:
        if data is None:
            return decode(p, config)
        with tempfile.TemporaryDirectory(prefix="xmr-ray-") as tmp:
            # same base name: classification and decoders look at the extension
            copy = os.path.join(tmp, os.path.basename(p.item.path))
            with open(copy, "wb") as f:
                f.write(data)
            real = p.item
            p.item = replace(real, path=copy)
            out = decode(p, config)
            out.item = real
            return out


class RayEmbedder(LocalEmbedder):
    """An ``Embedder`` whose decoding and embedding run on Ray actors, one per alive node.

    The driver loads each model too: for its ``ModelInfo``, the image preprocessor
    sent to decoders, and the bridge vocabulary the finish step embeds."""

    def __init__(
        self,
        settings: Settings,
        options: IndexOptions,
        *,
        address: str | None = None,
        transfer: str = "path",
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(settings, replace(options, workers=0))
        if transfer not in ("path", "bytes"):
            raise ValueError(f"transfer: 'path' or 'bytes', not {transfer!r}")
        self.address, self.transfer = address, transfer
        self.runtime_env = _runtime_env(runtime_env)
        self.actors: list[Any] = []
        self._done: dict[int, _Result] = {}  # id(prepared) -> its result, until embedded
        self._spaces_for: Mapping[str, Sequence[str]] = {}

    # -- the cluster ----------------------------------------------------------------------
    def start(self) -> list[Any]:
        """Connect (or start a local Ray on loopback) and place one actor per alive node."""
        if not self.address and "ray" not in sys.modules:
            # a private Ray on this machine: nodes and driver advertise loopback, not the host's
            # routable address (Ray reads this when imported; only `ray start` uses it otherwise)
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if not ray.is_initialized():
            kw: dict[str, Any] = {"runtime_env": self.runtime_env, "log_to_driver": False}
            if self.address:
                ray.init(address=self.address, **kw)
            else:  # a private local Ray, advertising loopback only
                ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, **kw)
        if not self.actors:
            cls = ray.remote(num_cpus=1, max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES)(_EmbedActor)
            for node in (n for n in ray.nodes() if n["Alive"]):
                strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=True)
                self.actors.append(
                    cls.options(scheduling_strategy=strategy).remote(self.settings, self.options.store_snippets)
                )
        return self.actors

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    # -- decoding and embedding -----------------------------------------------------------
    def decoded(self, work: Sequence[_Item], triage: Triage) -> AbstractContextManager[Iterator[_Prepared]]:
        return self._decoded(work, triage)

    @contextmanager
    def _decoded(self, work: Sequence[_Item], triage: Triage) -> Iterator[Iterator[_Prepared]]:
        self.start()  # the actors start while the driver loads its models
        yield self._stream(work, triage)

    def _payload(self, p: _Prepared) -> tuple[_Prepared, bytes | None]:
        if self.transfer == "bytes" and p.item.size <= BYTES_LIMIT:
            try:
                with open(p.item.path, "rb") as f:
                    return p, f.read()
            except OSError:
                pass  # the worker says why, reading it by path
        return p, None

    def _submit(self, actor: Any, chunk: list[_Prepared]) -> Any:
        spaces = sorted(self.encoders)
        return actor.process.remote([self._payload(p) for p in chunk], self._config(), spaces, self._spaces_for)

    def _stream(self, work: Sequence[_Item], triage: Triage) -> Iterator[_Prepared]:
        import ray

        from xmr import media

        self._spaces_for = media.spaces_for(self.options.modalities)
        pending: dict[Any, tuple[int, list[_Prepared]]] = {}
        load = [0] * len(self.actors)
        chunk: list[_Prepared] = []

        def submit() -> None:
            a = min(range(len(self.actors)), key=load.__getitem__)
            pending[self._submit(self.actors[a], chunk)] = (a, list(chunk))
            load[a] += 1
            chunk.clear()

        def collect(block: bool) -> Iterator[_Prepared]:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=None if block else 0)
            for ref in ready:
                a, sent = pending.pop(ref)
                load[a] -= 1
                yield from self._receive(ref, sent)

        for item in work:
            p = identify(item)
            if p.error or p.skip or not triage(p):
                p.head = None
                yield p
                continue
            chunk.append(p)
            if len(chunk) >= CHUNK_FILES:
                submit()
            while len(pending) >= IN_FLIGHT_PER_ACTOR * len(self.actors):
                yield from collect(block=True)
            yield from collect(block=False) if pending else ()
        if chunk:
            submit()
        while pending:
            yield from collect(block=True)

    def _receive(self, ref: Any, sent: list[_Prepared]) -> Iterator[_Prepared]:
        import ray

        try:
            results = ray.get(ref)
        except Exception as err:  # noqa: BLE001 - retries exhausted: the files fail, the run goes on
            reason = f"Ray worker failed: {str(err).strip().splitlines()[-1][:200]}"
            for p in sent:
                p.error, p.head = reason, None
                yield p
            return
        for result in results:
            self._done[id(result[0])] = result
            yield result[0]

    def redecode(self, batch: list[_Prepared], triage: Triage) -> None:
        """Images met before CLIP was loaded: decoded and embedded again, now."""
        import ray

        self._rerun(batch, [i for i, p in enumerate(batch) if p.undecoded], ray)

    def _rerun(self, batch: list[_Prepared], positions: list[int], ray: Any) -> None:
        if not positions:
            return
        for p in (batch[i] for i in positions):
            p.undecoded = False
        results = ray.get(self._submit(self.actors[0], [batch[i] for i in positions]))
        for i, result in zip(positions, results, strict=True):
            self._done.pop(id(batch[i]), None)
            self._done[id(result[0])] = result
            batch[i] = result[0]

    def embed(self, batch: Sequence[_Prepared], spaces_for: Mapping[str, Sequence[str]]) -> Embedded:
        import ray

        # a space loaded after a file was sent (the driver's safety net): that file again
        stale = [
            i
            for i, p in enumerate(batch)
            if id(p) in self._done
            and any(
                s not in self._done[id(p)][1] and s not in self._done[id(p)][2] and s not in p.spaces_done
                for s in self.encoders
                if s in wanted_spaces(p, spaces_for)  # with an image's recognised text: clap too
            )
        ]
        if stale:
            batch = list(batch)
            self._rerun(batch, stale, ray)  # type: ignore[arg-type]
        out = Embedded()
        for i, p in enumerate(batch):
            result = self._done.pop(id(p), None)
            if result is None:
                continue  # not sent: failed, skipped or already embedded
            _, encodings, fails = result
            for space, enc in encodings.items():
                out.encodings.setdefault((p.hash or "", space), enc)
            if fails:
                out.failed[i] = next(iter(fails.values()))
        return out


def _runtime_env(extra: dict[str, Any] | None) -> dict[str, Any]:
    """The workers get this process's XMR_* variables (models, offline mode, test backends)."""
    env = dict(extra or {})
    env_vars = {k: v for k, v in os.environ.items() if k.startswith("XMR_")}
    env_vars.update(env.get("env_vars", {}))
    env["env_vars"] = env_vars
    return env


def ray_embedder(executor: str, settings: Settings, options: IndexOptions) -> RayEmbedder:
    """``--executor ray`` (a local Ray, or the cluster in RAY_ADDRESS) or ``ray://HOST:PORT`` / ``ray:HOST:PORT``."""
    import importlib.util

    from xmr.errors import UsageError

    if executor != "ray" and not executor.startswith("ray:"):
        raise UsageError(f"--executor: 'local' or 'ray[://ADDRESS]', not {executor!r}")
    if importlib.util.find_spec("ray") is None:
        raise UsageError("--executor ray needs the Python package 'ray': pip install 'xmr[ray]'")
    address = executor[4:].lstrip("/") if executor.startswith("ray:") else os.environ.get("RAY_ADDRESS")
    if address and executor.startswith("ray://"):
        address = "ray://" + address  # Ray Client
    transfer = os.environ.get("XMR_RAY_TRANSFER", "path")
    return RayEmbedder(settings, options, address=address or None, transfer=transfer)
