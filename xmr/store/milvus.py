"""The Milvus backend: one collection per (space, model) on a Milvus server or milvus-lite.

The catalogue stays the source of truth and allocates the ids; a collection holds
the vector, its catalogue id (primary key) and the scalar fields ``kind`` (segment
kind) and ``content`` (the content hash the segment belongs to), so a search by kind
is a Milvus filter expression rather than a list of ids. Syncing is idempotent
(upserts, deletes of ids the catalogue no longer has), so a crash between a write to
Milvus and the state row only costs a re-sync. A reader (``readonly``) never writes
to Milvus: while the state row is behind the catalogue, or Milvus cannot be reached,
it answers exactly from the catalogue.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from xmr.errors import UsageError
from xmr.store import topk
from xmr.store.base import BackendError
from xmr.store.source import VectorSource, fetch_vectors

BACKEND = "milvus"
TOKEN_ENV = "XMR_MILVUS_TOKEN"
MAX_LIMIT = 16_384  # Milvus' largest top-k: beyond it the answer is exact
ID_CHUNK = 4_096  # ids per "id in [...]" filter expression
_CLIENTS: dict[str, Any] = {}  # one client per URI and process (milvus-lite locks its file)
_LOADED: set[tuple[str, str]] = set()  # (uri, collection) loaded for search by this process


def client(uri: str) -> Any:
    """A (cached) MilvusClient for ``milvus://HOST:PORT`` or ``milvus-lite:PATH``."""
    if uri not in _CLIENTS:
        from pymilvus import MilvusClient

        if uri.startswith("milvus-lite:"):
            _CLIENTS[uri] = MilvusClient(uri[len("milvus-lite:") :])
        elif uri.startswith("milvus://"):
            _CLIENTS[uri] = MilvusClient(uri="http://" + uri[len("milvus://") :], token=os.environ.get(TOKEN_ENV, ""))
        else:
            raise UsageError(f"not a Milvus address: {uri!r} (milvus://HOST:PORT or milvus-lite:PATH.db)")
    return _CLIENTS[uri]


def close_clients() -> None:
    """Close this process's clients (milvus-lite: releases the database for another process)."""
    for uri, c in _CLIENTS.items():
        c.close()
        if uri.startswith("milvus-lite:"):  # its in-process server holds the file lock
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(uri[len("milvus-lite:") :])
    _CLIENTS.clear()
    _LOADED.clear()


def collection_name(namespace: str, space: str, model_id: str) -> str:
    """Milvus names: letters, digits, '_'; the digest keeps distinct model ids apart."""
    digest = hashlib.blake2b(f"{space}\0{model_id}".encode(), digest_size=6).hexdigest()
    readable = re.sub(r"[^A-Za-z0-9_]", "_", model_id)[:40]
    return f"xmr_{namespace}_{space}_{readable}_{digest}"


class MilvusIndex:
    """``VectorIndex`` over one Milvus collection, synced from the catalogue."""

    backend = BACKEND
    filters = ("kind",)  # search(kind=...): xmr.search sends a segment kind instead of its ids

    def __init__(
        self,
        directory: Path,
        source: VectorSource,
        space: str,
        model_id: str,
        dim: int,
        *,
        uri: str,
        namespace: str = "xmr",
        readonly: bool = False,
        mapped: bool = False,
        index_type: str = "HNSW",
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 128,
    ) -> None:
        self.source, self.space, self.model_id, self.dim = source, space, model_id, dim
        # the address may carry index options: milvus-lite:x.db?index=FLAT, milvus://h:p?index=HNSW&ef=256
        uri, _, query = uri.partition("?")
        given = dict(kv.partition("=")[::2] for kv in query.split("&") if kv)
        unknown = set(given) - {"index", "M", "ef_construction", "ef"}
        if unknown:
            raise UsageError(f"{uri}: unknown option {sorted(unknown)[0]!r} (index, M, ef_construction, ef)")
        index_type = given.get("index", index_type)
        M, ef_construction = int(given.get("M", M)), int(given.get("ef_construction", ef_construction))
        self.uri, self.readonly, self.index_type = uri, readonly, index_type.upper()
        if self.index_type not in ("HNSW", "FLAT", "IVF_FLAT", "AUTOINDEX"):
            raise UsageError(f"{uri}: index {index_type!r}: choose HNSW, FLAT, IVF_FLAT or AUTOINDEX")
        self.params = {"M": M, "efConstruction": ef_construction}
        self.ef_search = int(given.get("ef", ef_search))
        self.collection = collection_name(namespace, space, model_id)
        self.label = f"{uri}/{self.collection}"
        self._synced: tuple[int, int] | None = None  # (max id, count) Milvus holds, as far as we know
        self._fallback = ""
        self._opened = False
        self._live = 0

    # -- syncing ----------------------------------------------------------------------------
    def _catalogue_mark(self) -> tuple[int, int]:
        return self.source.max_vector_id(self.space, self.model_id), self.source.vector_count(self.space, self.model_id)

    def _create(self, c: Any) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("kind", DataType.VARCHAR, max_length=64)
        schema.add_field("content", DataType.VARCHAR, max_length=128)
        index = c.prepare_index_params()
        params = self.params if self.index_type == "HNSW" else {}
        index.add_index(field_name="vector", index_type=self.index_type, metric_type="IP", params=params)
        c.create_collection(self.collection, schema=schema, index_params=index, consistency_level="Strong")

    def _rows(self, ids: np.ndarray, vecs: np.ndarray) -> list[dict[str, Any]]:
        refs = {}
        lookup = getattr(self.source, "segments_for_vectors", None)  # the catalogue; a bare source has none
        if callable(lookup):
            refs = lookup(ids.tolist())
        rows = []
        for i, v in zip(ids.tolist(), vecs, strict=True):
            ref = refs.get(i)
            kind, content = (ref.kind, ref.hash) if ref is not None else ("", "")
            rows.append({"id": i, "vector": v.tolist(), "kind": kind, "content": content})
        return rows

    def milvus_ids(self) -> np.ndarray:
        c = client(self.uri)
        it = c.query_iterator(self.collection, batch_size=16_384, filter="", output_fields=["id"])
        out = []
        try:
            while batch := it.next():
                out.extend(r["id"] for r in batch)
        finally:
            it.close()
        return np.sort(np.asarray(out, np.int64))

    def count(self) -> int:
        res = client(self.uri).query(self.collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
        return int(res[0]["count(*)"])

    def sync(self, *, full: bool = False) -> None:
        """Make the collection hold exactly the catalogue's live vectors: upsert what is new
        since the last sync, and when counts disagree (deletions, a partial earlier sync)
        compare id sets and repair both ways."""
        c = client(self.uri)
        mark = self._catalogue_mark()
        if not c.has_collection(self.collection):
            self._create(c)
            self._synced, full = (0, 0), True
        if self._synced is None:
            state = self._state()
            self._synced = (int(state["max_vector_id"]), -1) if state else (0, -1)
        if self._synced == mark and not full:
            return
        after = 0 if full else self._synced[0]
        for ids, vecs in self.source.iter_vectors(self.space, self.model_id, after_id=after, batch=2_000):
            c.upsert(self.collection, self._rows(np.asarray(ids, np.int64), np.asarray(vecs, np.float32)))
        # sealed and indexed now: unflushed rows are searched by brute force on every query
        # (milvus-lite: ~5 s a search over 5k unflushed 512-d rows, 50 ms once flushed)
        c.flush(self.collection)
        if self.count() != mark[1]:
            live, held = self.source.live_vector_ids(self.space, self.model_id), self.milvus_ids()
            gone = np.setdiff1d(held, live, assume_unique=True)
            for s in range(0, len(gone), ID_CHUNK):
                c.delete(self.collection, ids=gone[s : s + ID_CHUNK].tolist())
            missing = np.setdiff1d(live, held, assume_unique=True)
            if len(missing):
                first = int(missing[0]) - 1
                ids, vecs = fetch_vectors(self.source, self.space, self.model_id, self.dim, after_id=first)
                keep = np.isin(ids, missing)
                c.upsert(self.collection, self._rows(ids[keep], vecs[keep]))
            c.flush(self.collection)
        self._synced = mark

    def rebuild(self) -> dict:
        """Drop the collection and fill it again from the catalogue (``xmr index --rebuild-store``)."""
        c = client(self.uri)
        if c.has_collection(self.collection):
            c.drop_collection(self.collection)
        _LOADED.discard((self.uri, self.collection))
        self._synced = None
        return self.checkpoint()

    def _state(self) -> dict | None:
        state = self.source.get_ann_state(self.space, self.model_id)
        if not state or state.get("backend") != BACKEND or state.get("collection") != self.collection:
            return None
        return state

    # -- searching --------------------------------------------------------------------------
    def _usable(self) -> bool:
        """Whether Milvus answers for the catalogue as it is now (a writer syncs first)."""
        try:
            if not self.readonly:
                self.sync()
                return True
            state = self._state()
            if state is None or (state["max_vector_id"], state["count"]) != self._catalogue_mark():
                return False  # behind: the next 'xmr index' syncs it; meanwhile exactly
            return True
        except Exception as err:  # noqa: BLE001 - any client/server failure: answer from the catalogue
            self._fallback = f"Milvus at {self.uri} failed: {str(err).splitlines()[0][:200]}"
            return False

    def search(
        self, queries: np.ndarray, k: int, *, candidate_ids: np.ndarray | None = None, kind: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``kind``: only vectors of that segment kind (a Milvus filter expression)."""
        if k < 0:
            raise UsageError(f"k must be >= 0, got {k}")
        q = np.atleast_2d(np.asarray(queries, np.float32))
        if k == 0 or k > MAX_LIMIT or not self._usable():
            return self.exact_search(q, k, candidate_ids=candidate_ids, kind=kind)
        self._opened, self._live = True, self._catalogue_mark()[1]
        where = f'kind == "{kind}"' if kind else ""
        try:
            if candidate_ids is None:
                return self._milvus(q, k, where)
            cand = np.asarray(candidate_ids, np.int64)
            parts = []
            for s in range(0, len(cand), ID_CHUNK):
                expr = f"id in [{','.join(map(str, cand[s : s + ID_CHUNK].tolist()))}]"
                parts.append(self._milvus(q, k, f"({where}) and {expr}" if where else expr))
            return topk.merge(parts, len(q), k) if parts else topk.empty(len(q))
        except Exception as err:  # noqa: BLE001 - the server went away: answer from the catalogue
            self._fallback = f"Milvus at {self.uri} failed: {str(err).splitlines()[0][:200]}"
            return self.exact_search(q, k, candidate_ids=candidate_ids, kind=kind)

    def _milvus(self, q: np.ndarray, k: int, where: str) -> tuple[np.ndarray, np.ndarray]:
        if (self.uri, self.collection) not in _LOADED:
            # a collection is searchable once loaded into memory; a new process (or a restarted
            # server) finds it released. Idempotent, once per process.
            client(self.uri).load_collection(self.collection)
            _LOADED.add((self.uri, self.collection))
        params: dict[str, Any] = {"metric_type": "IP"}
        if self.index_type == "HNSW":
            params["params"] = {"ef": max(k, self.ef_search)}
        hits = client(self.uri).search(
            self.collection,
            data=q.tolist(),
            limit=k,
            filter=where,
            search_params=params,
            output_fields=["id"],
            consistency_level="Strong",
        )
        width = max((len(h) for h in hits), default=0)
        ids, sims = np.zeros((len(q), width), np.int64), np.full((len(q), width), -np.inf, np.float32)
        for row, h in enumerate(hits):
            ids[row, : len(h)] = [x["id"] for x in h]
            sims[row, : len(h)] = [x["distance"] for x in h]
        if any(len(h) != width for h in hits):  # rows are padded only when some found fewer
            return topk.merge([(ids, sims)], len(q), k)
        return ids, sims

    def exact_search(
        self, queries: np.ndarray, k: int, *, candidate_ids: np.ndarray | None = None, kind: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if k < 0:
            raise UsageError(f"k must be >= 0, got {k}")
        q = np.atleast_2d(np.asarray(queries, np.float32))
        if kind is not None:
            group = getattr(self.source, "group_vector_ids", None)
            if callable(group):
                kind_ids = group(self.space, self.model_id, kind)
                candidate_ids = kind_ids if candidate_ids is None else np.intersect1d(candidate_ids, kind_ids)
        ids, vecs = fetch_vectors(self.source, self.space, self.model_id, self.dim, after_id=0)
        ids, vecs = topk.keep_candidates(ids, vecs, None if candidate_ids is None else np.sort(candidate_ids))
        self._opened, self._live = True, self._catalogue_mark()[1]
        return topk.exact_block(q, vecs, ids, k)

    # -- persistence ------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        if self.readonly:
            raise UsageError(f"{self.label}: a read-only index does not write to Milvus")
        try:
            self.sync(full=self._state() is None)
        except Exception as err:  # noqa: BLE001 - any client/server failure
            raise BackendError(
                f"could not sync the vectors to Milvus at {self.uri}: {str(err).splitlines()[0][:200]} "
                "(the catalogue is complete; the next 'xmr index' syncs, searches answer exactly meanwhile)"
            ) from None
        max_id, count = self._synced or self._catalogue_mark()
        state = {"backend": BACKEND, "collection": self.collection, "max_vector_id": max_id, "count": count}
        state["index_type"] = self.index_type
        self.source.put_ann_state(self.space, self.model_id, state)
        return state

    def problem(self) -> str:
        state = self._state()
        max_id, count = self._catalogue_mark()
        if state is None:
            return "never synced to Milvus" if count else ""
        if (state["max_vector_id"], state["count"]) != (max_id, count):
            return "Milvus is behind the catalogue"
        if count and not self.persisted():  # one cheap call: dropped (status --check) or unreachable
            return f"collection {self.collection} missing or Milvus unreachable"
        return ""

    def verify(self, sample: int = 32) -> str:
        """Counts agree and a sample of vectors is the catalogue's (within 1e-5)."""
        try:
            c = client(self.uri)
            if not c.has_collection(self.collection):
                return f"collection {self.collection} is missing"
            held, want = self.count(), self.source.vector_count(self.space, self.model_id)
            if held != want:
                return f"Milvus holds {held} vectors, the catalogue {want}"
            live = self.source.live_vector_ids(self.space, self.model_id)
            if not len(live):
                return ""
            picks = np.random.default_rng().choice(live, min(sample, len(live)), replace=False)
            for vid in picks.tolist():
                ids, vecs = next(iter(self.source.iter_vectors(self.space, self.model_id, after_id=vid - 1, batch=1)))
                got = c.get(self.collection, ids=[vid], output_fields=["vector"])
                if not got or np.abs(np.asarray(got[0]["vector"], np.float32) - vecs[0]).max() > 1e-5:
                    return f"vector {vid} in Milvus differs from the catalogue's"
        except Exception as err:  # noqa: BLE001 - unreachable or failing server
            return f"Milvus at {self.uri} failed: {str(err).splitlines()[0][:200]}"
        return ""

    def discard_if_damaged(self) -> bool:
        if not self.verify():
            return False
        c = client(self.uri)
        if c.has_collection(self.collection):
            c.drop_collection(self.collection)
        _LOADED.discard((self.uri, self.collection))
        self._synced = None
        return True

    def fallback(self) -> str:
        return self._fallback

    def persisted(self) -> bool:
        try:
            return bool(client(self.uri).has_collection(self.collection))
        except Exception:  # noqa: BLE001 - unreachable: nothing we could remove
            return False

    def fingerprint(self) -> str:
        return json.dumps([self.label, self._state()], sort_keys=True)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": BACKEND, "space": self.space, "model_id": self.model_id, "dim": self.dim}
        out.update(opened=self._opened, mode=f"milvus {self.index_type}", uri=self.uri, collection=self.collection)
        if self._opened:
            out["live_count"] = self._live
        return out

    def close(self) -> None:
        self._opened = False
        self._synced = None

    refresh = close
