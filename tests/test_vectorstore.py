from __future__ import annotations

import os
from pathlib import Path

import hnswlib
import numpy as np
import pytest

import xmr.store.hnsw_file as hnsw_file
import xmr.store.hnsw_search as hnsw_search
from benchmarks.search import clustered  # the benchmark's generator: one definition of the data
from xmr.errors import CatalogueError, UsageError
from xmr.store import topk
from xmr.store.hnsw import HnswStore as VectorStore
from xmr.store.hnsw_build import HnswParams
from xmr.store.hnsw_file import file_checksum
from xmr.store.memory import MemoryVectorSource
from xmr.store.source import VectorSource

SPACE, MODEL = "clip", "test-model"
DIM = 32
# ef >= n makes HNSW exhaustive on these small sets, so results must equal exact search
EXHAUSTIVE = HnswParams(M=16, ef_construction=100, ef_search=1000)


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make(tmp_path: Path, n: int, *, seed: int = 0, threshold: int = 0, params: HnswParams = EXHAUSTIVE):
    src = MemoryVectorSource()
    rng = np.random.default_rng(seed)
    ids = src.add(SPACE, MODEL, unit(rng, n)) if n else np.empty(0, np.int64)
    store = new_store(tmp_path, src, threshold=threshold, params=params)
    return src, store, ids, rng


def new_store(tmp_path: Path, src, *, threshold: int = 0, params: HnswParams = EXHAUSTIVE) -> VectorStore:
    return VectorStore(
        tmp_path / "ann", src, SPACE, MODEL, DIM, exact_threshold=threshold, params=params, num_threads=1
    )


def assert_same_as_exact(store: VectorStore, queries: np.ndarray, k: int, **kw) -> None:
    ids, sims = store.search(queries, k, **kw)
    eids, esims = store.exact_search(queries, k, **kw)
    np.testing.assert_array_equal(ids, eids)
    np.testing.assert_allclose(sims, esims, atol=1e-5)


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_memory_source_implements_protocol():
    src = MemoryVectorSource()
    assert isinstance(src, VectorSource)
    rng = np.random.default_rng(0)
    a = src.add(SPACE, MODEL, unit(rng, 5))
    b = src.add("clap", MODEL, unit(rng, 3))
    assert a.tolist() == [1, 2, 3, 4, 5] and b.tolist() == [6, 7, 8]  # one counter, like AUTOINCREMENT
    assert src.delete(SPACE, MODEL, [5, 2, 99]) == 2
    assert src.vector_count(SPACE, MODEL) == 3
    assert src.max_vector_id(SPACE, MODEL) == 5  # never decreases
    assert src.live_vector_ids(SPACE, MODEL).tolist() == [1, 3, 4]
    batches = list(src.iter_vectors(SPACE, MODEL, after_id=1, batch=1))
    assert [b[0].tolist() for b in batches] == [[3], [4]]
    assert src.get_ann_state(SPACE, MODEL) is None


@pytest.mark.parametrize("threshold", [0, 10**9])
def test_k_larger_than_count_never_errors(tmp_path, threshold):
    src, store, ids, rng = make(tmp_path, 30, threshold=threshold)
    q = unit(rng, 3)
    found, sims = store.search(q, 100)
    assert found.shape == sims.shape == (3, 30)
    assert sorted(found[0].tolist()) == ids.tolist()
    assert np.all(np.diff(sims, axis=1) <= 1e-7)  # best first
    assert store.search(q, 0)[0].shape == (3, 0)
    # deletions shrink what can be returned; still no error
    src.delete(SPACE, MODEL, ids[:25])
    assert store.search(q, 100)[0].shape == (3, 5)


def test_empty_space(tmp_path):
    _, store, _, rng = make(tmp_path, 0)
    ids, sims = store.search(unit(rng, 2), 10)
    assert ids.shape == (2, 0) and sims.shape == (2, 0)
    assert store.exact_search(unit(rng, 2), 10)[0].shape == (2, 0)


def test_small_set_below_threshold_builds_no_ann(tmp_path):
    src, store, _, rng = make(tmp_path, 200, threshold=1000)
    assert_same_as_exact(store, unit(rng, 5), 10)
    assert store.stats()["mode"] == "exact"
    assert not store.path.exists()
    state = store.checkpoint()
    assert state["file"] is None and not store.path.exists()


def test_ann_equals_exact_on_small_set(tmp_path):
    _, store, _, rng = make(tmp_path, 500)
    q = unit(rng, 20)
    assert_same_as_exact(store, q, 10)
    assert store.stats()["mode"] == "ann"
    ids, sims = store.search(q, 10)
    # cosine similarities, not distances
    np.testing.assert_allclose(sims[:, 0], np.max(q @ store._index.get_items(ids[:, 0]).T, axis=1), atol=1e-5)


def test_search_accepts_one_vector_and_rejects_wrong_dim(tmp_path):
    _, store, _, rng = make(tmp_path, 50)
    assert store.search(unit(rng, 1)[0], 3)[0].shape == (1, 3)
    with pytest.raises(UsageError):
        store.search(np.zeros((1, DIM + 1), np.float32), 3)


def test_recall_at_10_on_20k_clustered(tmp_path):
    """Default parameters, 512-d like CLIP, clustered like real embeddings."""
    dim = 512
    data = clustered(20_000, dim)
    queries = clustered(100, dim, draw=1)
    src = MemoryVectorSource()
    ids = src.add(SPACE, MODEL, data)
    store = VectorStore(tmp_path, src, SPACE, MODEL, dim)  # default params and threshold
    found, _ = store.search(queries, 10)  # builds the ANN: ~4 s on 2 idle cores
    assert store.stats()["mode"] == "ann"
    truth = ids[np.argsort(-(queries @ data.T), axis=1)[:, :10]]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])
    assert recall >= 0.95, recall


def test_vectors_added_after_checkpoint_are_found(tmp_path):
    src, store, _, rng = make(tmp_path, 400)
    store.checkpoint()
    q = unit(rng, 4)
    new_ids = src.add(SPACE, MODEL, q)  # each query's exact match, committed after the checkpoint
    for s in (store, new_store(tmp_path, src)):  # the open store, and a fresh process
        ids, sims = s.search(q, 5)
        assert ids[:, 0].tolist() == new_ids.tolist()
        np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)
        assert s.stats()["tail_count"] == 4
        assert_same_as_exact(s, q, 10)
    state = store.checkpoint()
    assert state["build"] == "incremental" and state["max_vector_id"] == int(new_ids[-1])
    fresh = new_store(tmp_path, src)
    assert fresh.search(q, 1)[0][:, 0].tolist() == new_ids.tolist()
    assert fresh.stats()["tail_count"] == 0 and fresh.last_rebuild_reason is None


def test_deleted_vectors_are_never_returned(tmp_path):
    src, store, _, rng = make(tmp_path, 600)
    store.checkpoint()
    q = unit(rng, 10)
    top, _ = store.search(q, 10)
    gone = np.unique(top[:, :3])
    src.delete(SPACE, MODEL, gone)
    late = src.add(SPACE, MODEL, q[:2])
    src.delete(SPACE, MODEL, late[:1])  # deleted from the exact tail too
    for s in (store, new_store(tmp_path, src)):
        ids, _ = s.search(q, 50)
        assert not np.isin(ids, gone).any()
        assert late[0] not in ids
        assert_same_as_exact(s, q, 10)
    # deleted ids stay out even when asked for explicitly
    ids, _ = store.search(q, 10, candidate_ids=np.concatenate([gone, late]))
    assert set(ids.ravel().tolist()) <= {int(late[1])}


def test_more_than_a_quarter_deleted_triggers_rebuild(tmp_path):
    src, store, ids, rng = make(tmp_path, 400)
    store.checkpoint()
    src.delete(SPACE, MODEL, ids[:40])  # 10 %: incremental, marks only
    state = store.checkpoint()
    assert state["build"] == "incremental"
    assert state["element_count"] == 400 and state["deleted_count"] == 40
    src.delete(SPACE, MODEL, ids[40:120])  # 120 of 400 = 30 %
    state = store.checkpoint()
    assert state["build"] == "full"
    assert state["element_count"] == 280 and state["deleted_count"] == 0
    assert "deleted" in store.last_rebuild_reason
    assert_same_as_exact(new_store(tmp_path, src), unit(rng, 5), 10)


def corrupt_truncate(store: VectorStore, src) -> None:
    data = store.path.read_bytes()
    store.path.write_bytes(data[: len(data) // 2])


def corrupt_garbage(store: VectorStore, src) -> None:
    size = store.path.stat().st_size
    store.path.write_bytes(np.random.default_rng(1).bytes(size))


def corrupt_garbage_with_matching_state(store: VectorStore, src) -> None:
    """Garbage whose checksum the state row agrees with: the header check must catch it."""
    corrupt_garbage(store, src)
    state = src.get_ann_state(SPACE, MODEL)
    state["checksum"] = file_checksum(store.path)
    src.put_ann_state(SPACE, MODEL, state)


def corrupt_wrong_dim(store: VectorStore, src) -> None:
    """A real hnswlib file of another dimension, with a state row that vouches for it."""
    state = src.get_ann_state(SPACE, MODEL)
    n = state["element_count"]
    other = hnswlib.Index(space="ip", dim=DIM // 2)
    other.init_index(max_elements=n, M=16, ef_construction=50)
    other.add_items(unit(np.random.default_rng(2), n, DIM // 2), np.arange(1, n + 1))
    other.save_index(str(store.path))
    state.update(file_size=store.path.stat().st_size, checksum=file_checksum(store.path))
    src.put_ann_state(SPACE, MODEL, state)


def corrupt_stale_checksum(store: VectorStore, src) -> None:
    state = src.get_ann_state(SPACE, MODEL)
    state["checksum"] = "blake2b-tree64m:" + "0" * 64
    src.put_ann_state(SPACE, MODEL, state)


def corrupt_bit_flip(store: VectorStore, src) -> None:
    """One flipped bit in the middle of the file: same size, same header."""
    data = bytearray(store.path.read_bytes())
    data[len(data) // 2] ^= 0x10
    store.path.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt", [corrupt_stale_checksum, corrupt_bit_flip])
def test_damage_behind_a_valid_header_is_found_by_the_full_check(tmp_path, corrupt):
    """A reader's open checks only what is cheap; verify() (xmr status --check) and every writer hash it all."""
    src, store, _, rng = make(tmp_path, 300)
    store.checkpoint()
    assert store.verify() == ""
    corrupt(store, src)
    assert new_store(tmp_path, src).verify().startswith("checksum mismatch")
    # a writer never builds on it: the next checkpoint rebuilds from the source
    writer = new_store(tmp_path, src)
    state = writer.checkpoint()
    assert state["build"] == "full" and "checksum" in writer.last_rebuild_reason
    assert writer.verify() == ""
    assert_same_as_exact(new_store(tmp_path, src), unit(rng, 8), 10)


def test_a_reader_answers_exactly_instead_of_rebuilding(tmp_path):
    src, store, _, rng = make(tmp_path, 300)
    store.checkpoint()
    corrupt_truncate(store, src)
    before = store.path.read_bytes()
    reader = VectorStore(tmp_path / "ann", src, SPACE, MODEL, DIM, exact_threshold=0, readonly=True)
    assert_same_as_exact(reader, unit(rng, 8), 10)
    assert reader.degraded and reader.stats()["mode"] == "exact"
    assert store.path.read_bytes() == before  # nothing written


def corrupt_missing(store: VectorStore, src) -> None:
    store.path.unlink()


def corrupt_state_dim(store: VectorStore, src) -> None:
    state = src.get_ann_state(SPACE, MODEL)
    state["dim"] = DIM * 2
    src.put_ann_state(SPACE, MODEL, state)


def corrupt_no_state(store: VectorStore, src) -> None:
    src._states.clear()


# damage that a reader's cheap checks (size, header, state row) must catch before the file answers
INVALID_FILES = [
    corrupt_truncate,
    corrupt_garbage,
    corrupt_garbage_with_matching_state,
    corrupt_wrong_dim,
    corrupt_missing,
    corrupt_state_dim,
    corrupt_no_state,
]


@pytest.mark.parametrize("corrupt", INVALID_FILES)
def test_invalid_file_is_detected_and_rebuilt(tmp_path, corrupt):
    src, store, _, rng = make(tmp_path, 300)
    first = store.checkpoint()
    q = unit(rng, 8)
    corrupt(store, src)
    fresh = new_store(tmp_path, src)
    assert_same_as_exact(fresh, q, 10)
    assert fresh.last_rebuild_reason  # it noticed
    state = src.get_ann_state(SPACE, MODEL)
    assert state["build"] == "full" and state["checksum"] == file_checksum(store.path)
    if first is not None and corrupt is not corrupt_no_state:
        assert state["generation"] > first["generation"]
    again = new_store(tmp_path, src)  # the re-checkpointed file is now trusted
    assert_same_as_exact(again, q, 10)
    assert again.last_rebuild_reason is None
    assert temp_files(store.directory) == []


def test_catalogue_reset_invalidates_the_file(tmp_path):
    src, store, _, rng = make(tmp_path, 300)
    store.checkpoint()
    other = MemoryVectorSource()  # a new catalogue: fewer ids than the state row remembers
    other.add(SPACE, MODEL, unit(rng, 100))
    other.put_ann_state(SPACE, MODEL, src.get_ann_state(SPACE, MODEL))
    fresh = new_store(tmp_path, other)
    assert_same_as_exact(fresh, unit(rng, 3), 10)
    assert "older" in fresh.last_rebuild_reason


def test_checkpoint_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    src, store, _, rng = make(tmp_path, 300)
    store.checkpoint()
    d = store.directory
    assert temp_files(d) == []
    good = src.get_ann_state(SPACE, MODEL)
    before = store.path.read_bytes()

    # a crashed writer's temp file is swept by the next checkpoint
    (d / f".{store.path.name}.999.dead.tmp").write_bytes(b"x")
    src.add(SPACE, MODEL, unit(rng, 5))
    store.checkpoint()
    assert temp_files(d) == []

    # a failure before the replace leaves the old file and state untouched, and no temp
    good = src.get_ann_state(SPACE, MODEL)
    before = store.path.read_bytes()
    src.add(SPACE, MODEL, unit(rng, 5))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(hnsw_file.os, "replace", boom)
    with pytest.raises(CatalogueError):
        store.checkpoint()
    monkeypatch.undo()
    assert temp_files(d) == []
    assert store.path.read_bytes() == before and src.get_ann_state(SPACE, MODEL) == good
    assert file_checksum(store.path) == good["checksum"]
    # and the store still answers, from the old file plus the exact tail
    assert_same_as_exact(store, unit(rng, 4), 10)


def test_state_row_written_after_the_file(tmp_path, monkeypatch):
    src, store, _, rng = make(tmp_path, 300)
    order = []
    real_replace, real_put = hnsw_file.os.replace, src.put_ann_state
    monkeypatch.setattr(hnsw_file.os, "replace", lambda a, b: (order.append("replace"), real_replace(a, b)))
    monkeypatch.setattr(src, "put_ann_state", lambda *a: (order.append("put"), real_put(*a)))
    store.checkpoint()
    assert order == ["replace", "put"]


def test_unwritable_directory_still_searches(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    src = MemoryVectorSource()
    rng = np.random.default_rng(0)
    src.add(SPACE, MODEL, unit(rng, 300))
    store = VectorStore(blocker / "ann", src, SPACE, MODEL, DIM, exact_threshold=0, params=EXHAUSTIVE)
    assert_same_as_exact(store, unit(rng, 3), 10)
    assert store.last_error
    with pytest.raises(CatalogueError):
        store.checkpoint()


@pytest.mark.parametrize("threshold", [0, 10**9])
def test_candidate_ids_small_subset(tmp_path, threshold):
    _, store, ids, rng = make(tmp_path, 500, threshold=threshold)
    q = unit(rng, 6)
    cand = ids[::7]
    found, _ = store.search(q, 10, candidate_ids=cand)
    assert np.isin(found, cand).all()
    assert_same_as_exact(store, q, 10, candidate_ids=cand)
    assert store.search(q, 10, candidate_ids=np.array([], np.int64))[0].shape == (6, 0)
    assert store.search(q, 10, candidate_ids=ids[:3])[0].shape == (6, 3)


def test_candidate_ids_filtered_hnsw(tmp_path, monkeypatch):
    monkeypatch.setattr(hnsw_search, "SUBSET_EXACT_MAX", 10)  # force the hnswlib filter path
    monkeypatch.setattr(hnsw_search, "SUBSET_EXACT_FRACTION", 0.0)
    src, store, ids, rng = make(tmp_path, 800)
    q = unit(rng, 6)
    cand = ids[ids % 2 == 0]
    src.delete(SPACE, MODEL, cand[:5])
    found, _ = store.search(q, 10, candidate_ids=cand)
    assert np.isin(found, cand[5:]).all()
    assert_same_as_exact(store, q, 10, candidate_ids=cand)
    # fewer candidates than k: hnswlib would raise, the store returns what exists
    assert store.search(q, 40, candidate_ids=ids[100:130])[0].shape == (6, 30)


def test_open_store_follows_commits_and_deletions(tmp_path):
    for threshold in (0, 10**9):
        src, store, ids, rng = make(tmp_path / str(threshold), 300, threshold=threshold)
        q = unit(rng, 3)
        store.search(q, 5)
        new = src.add(SPACE, MODEL, q)
        assert store.search(q, 1)[0][:, 0].tolist() == new.tolist()
        src.delete(SPACE, MODEL, new)
        assert not np.isin(store.search(q, 20)[0], new).any()
        assert_same_as_exact(store, q, 10)


def test_reader_keeps_working_while_file_is_replaced(tmp_path):
    src, store, _, rng = make(tmp_path, 400)
    store.checkpoint()
    reader = new_store(tmp_path, src)
    q = unit(rng, 5)
    reader.search(q, 5)
    inode = os.stat(store.path).st_ino
    src.add(SPACE, MODEL, unit(rng, 50))
    store.checkpoint()  # another "process" replaces the file under the reader
    assert os.stat(store.path).st_ino != inode
    assert_same_as_exact(reader, q, 10)  # old graph + exact tail
    reader.refresh()
    assert_same_as_exact(reader, q, 10)
    assert reader.stats()["tail_count"] == 0 and reader.last_rebuild_reason is None


def test_reused_ids_invalidate_the_file(tmp_path):
    """A catalogue without AUTOINCREMENT hands deleted newest ids out again."""
    rng = np.random.default_rng(0)
    old = unit(rng, 300)
    src = MemoryVectorSource()
    src.add(SPACE, MODEL, old)
    store = new_store(tmp_path, src)
    store.checkpoint()
    # the same catalogue after ids 291..300 were deleted and handed out again
    reused = MemoryVectorSource()
    reused.add(SPACE, MODEL, old[:290])
    new_ids = reused.add(SPACE, MODEL, unit(rng, 10))
    assert new_ids.tolist() == list(range(291, 301))
    reused.put_ann_state(SPACE, MODEL, src.get_ann_state(SPACE, MODEL))
    fresh = new_store(tmp_path, reused)
    assert_same_as_exact(fresh, old[290:], 10)  # the old vectors' exact matches are gone
    assert "reused" in fresh.last_rebuild_reason


def test_read_only_catalogue_still_searches(tmp_path):
    src, store, _, rng = make(tmp_path, 300)

    def refuse(*a):
        raise RuntimeError("attempt to write a readonly database")

    src.put_ann_state = refuse
    assert_same_as_exact(store, unit(rng, 3), 10)
    assert "readonly" in store.last_error


SQLITE_SOURCE = '''
import json, sqlite3
import numpy as np


class SqliteSource:
    """A minimal SQLite VectorSource (one space), shared by processes."""

    def __init__(self, path):
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS v (id INTEGER PRIMARY KEY AUTOINCREMENT, vec BLOB)")
        self.conn.execute("CREATE TABLE IF NOT EXISTS s (k INTEGER PRIMARY KEY, state TEXT)")

    def add(self, vecs):
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany("INSERT INTO v (vec) VALUES (?)", [(np.asarray(x, "<f4").tobytes(),) for x in vecs])
        self.conn.execute("COMMIT")

    def vector_count(self, space, model_id):
        return self.conn.execute("SELECT COUNT(*) FROM v").fetchone()[0]

    def max_vector_id(self, space, model_id):
        r = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'v'").fetchone()
        return int(r[0]) if r else 0

    def iter_vectors(self, space, model_id, *, after_id=0, batch=20000):
        while True:
            rows = self.conn.execute(
                "SELECT id, vec FROM v WHERE id > ? ORDER BY id LIMIT ?", (after_id, batch)
            ).fetchall()
            if not rows:
                return
            ids = np.array([r[0] for r in rows], np.int64)
            yield ids, np.frombuffer(b"".join(r[1] for r in rows), "<f4").reshape(len(rows), -1)
            after_id = int(ids[-1])

    def live_vector_ids(self, space, model_id):
        return np.array([r[0] for r in self.conn.execute("SELECT id FROM v ORDER BY id")], np.int64)

    def get_ann_state(self, space, model_id):
        r = self.conn.execute("SELECT state FROM s WHERE k = 0").fetchone()
        return json.loads(r[0]) if r else None

    def put_ann_state(self, space, model_id, state):
        self.conn.execute("INSERT OR REPLACE INTO s (k, state) VALUES (0, ?)", (json.dumps(state),))
'''

WRITER = """
import sys
import time
import numpy as np
from pathlib import Path
from xmr.store.hnsw import HnswStore as VectorStore
from xmr.store.hnsw_build import HnswParams
exec(open(sys.argv[1]).read())
src = SqliteSource(sys.argv[2])
put = src.put_ann_state


def slow_put(*a):  # widen the window between os.replace and the state row
    time.sleep(0.05)
    put(*a)


src.put_ann_state = slow_put
q = np.load(sys.argv[3])
rng = np.random.default_rng(1)
store = VectorStore(Path(sys.argv[4]), src, "clip", "test-model", q.shape[0], exact_threshold=0,
                    params=HnswParams(ef_search=1000), num_threads=1)
for _ in range(8):
    # far from the query (cos ~ -0.95), so its top 10 never changes
    v = -q + 0.3 * rng.standard_normal((40, q.shape[0]))
    src.add(v / np.linalg.norm(v, axis=1, keepdims=True))
    store.checkpoint()
"""


def test_readers_never_see_a_half_replaced_index(tmp_path):
    import subprocess
    import sys

    (tmp_path / "source.py").write_text(SQLITE_SOURCE)
    (tmp_path / "writer.py").write_text(WRITER)
    ns: dict = {}
    exec(SQLITE_SOURCE, ns)
    db = str(tmp_path / "cat.db")
    src = ns["SqliteSource"](db)
    rng = np.random.default_rng(0)
    src.add(unit(rng, 300))
    q = unit(rng, 1)[0]
    np.save(tmp_path / "q.npy", q)
    first = new_store(tmp_path, src)
    first.checkpoint()
    truth = first.exact_search(q, 10)

    writer = subprocess.Popen(
        [
            sys.executable,
            str(tmp_path / "writer.py"),
            str(tmp_path / "source.py"),
            db,
            str(tmp_path / "q.npy"),
            str(tmp_path / "ann"),
        ],
        stderr=subprocess.PIPE,
    )
    opens = 0
    while writer.poll() is None or opens == 0:
        reader = new_store(tmp_path, ns["SqliteSource"](db))
        ids, sims = reader.search(q, 10)
        assert reader.last_rebuild_reason is None, reader.last_rebuild_reason
        np.testing.assert_array_equal(ids, truth[0])
        opens += 1
    assert writer.wait() == 0, writer.stderr.read().decode()
    assert src.get_ann_state(SPACE, MODEL)["generation"] == 9
    assert opens >= 2


def test_a_large_candidate_share_is_searched_by_overfetching(tmp_path):
    """A segment kind's ids (a large share of the index): one unfiltered query, filtered after."""
    src, store, ids, rng = make(tmp_path, 3000, params=HnswParams())
    store.checkpoint()
    members = np.sort(rng.choice(ids, 900, replace=False))  # 30 %
    q = unit(rng, 20)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hnsw_search, "exact_from_index", lambda *a, **k: pytest.fail("no get_items for a large share"))
        got, sims = store.search(q, 10, candidate_ids=members)
    assert np.isin(got, members).all() and got.shape == (20, 10)
    assert (np.diff(sims, axis=1) <= 1e-6).all()
    want, _ = store.exact_search(q, 10, candidate_ids=members)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), want.tolist(), strict=True)])
    assert recall >= 0.95


def test_discard_removes_a_damaged_file_but_not_one_swapped_in_since(tmp_path):
    """status --check removes what it found damaged only if it is still damaged under the swap lock."""
    src, store, _, rng = make(tmp_path, 300)
    store.checkpoint()
    sound = store.path.read_bytes()
    corrupt_bit_flip(store, src)
    checker = new_store(tmp_path, src)
    assert checker.verify().startswith("checksum mismatch")
    store.path.write_bytes(sound)  # an index run's new checkpoint lands between the check and the removal
    assert checker.discard_if_damaged() is False and store.path.read_bytes() == sound
    corrupt_bit_flip(store, src)
    assert new_store(tmp_path, src).discard_if_damaged() is True and not store.path.exists()
    assert_same_as_exact(new_store(tmp_path, src), unit(rng, 8), 10)


@pytest.mark.parametrize(("na", "nb"), [(0, 5), (5, 0), (1, 1), (50, 2000), (3000, 40), (1000, 1000)])
def test_sorted_intersection_equals_intersect1d(na: int, nb: int) -> None:
    rng = np.random.default_rng(na * 7 + nb)
    a = np.unique(rng.integers(0, 3 * max(na, nb, 1), size=na))
    b = np.unique(rng.integers(0, 3 * max(na, nb, 1), size=nb))
    got = topk.sorted_intersection(a, b)
    assert got.dtype == np.int64
    assert np.array_equal(got, np.intersect1d(a, b, assume_unique=True))
    assert np.array_equal(topk.sorted_intersection(b, a), got)


def test_unsorted_candidate_ids_are_still_sorted_and_deduplicated() -> None:
    assert VectorStore._candidates(np.array([5, 3, 3, 9])).tolist() == [3, 5, 9]
    sorted_ids = np.arange(10, dtype=np.int64)
    assert VectorStore._candidates(sorted_ids) is not None
    assert VectorStore._candidates(sorted_ids).tolist() == list(range(10))


# ------------------------------------------------------------- mapped readers (one query a process)


def mapped_reader(tmp_path: Path, src) -> VectorStore:
    return VectorStore(
        tmp_path / "ann", src, SPACE, MODEL, DIM, exact_threshold=0, readonly=True, mapped=True, num_threads=1
    )


def test_a_mapped_reader_scans_the_file_and_equals_exact(tmp_path):
    src, store, ids, rng = make(tmp_path, 900)
    store.checkpoint()
    src.delete(SPACE, MODEL, ids[::7])  # deleted since the checkpoint
    late = src.add(SPACE, MODEL, unit(rng, 30))  # committed since: the exact tail
    reader = mapped_reader(tmp_path, src)
    q = unit(rng, 6)
    assert_same_as_exact(reader, q, 10)
    stats = reader.stats()
    assert stats["mode"] == "ann" and stats["scan"] and stats["tail_count"] == 30
    assert not np.isin(reader.search(q, 200)[0], ids[::7]).any()
    for cand in (ids[100:140], ids[::2], np.concatenate([ids[:400], late[:5]])):  # small, large, with tail
        assert_same_as_exact(reader, q, 10, candidate_ids=cand)
    assert_same_as_exact(reader, q[:1], 900)  # k beyond the live count
    assert temp_files(store.directory) == [] and reader.degraded is None


def test_a_mapped_reader_reads_the_vectors_hnswlib_stored(tmp_path):
    src, store, ids, _ = make(tmp_path, 500)
    store.checkpoint()
    reader = mapped_reader(tmp_path, src)
    reader.search(unit(np.random.default_rng(3), 1), 1)
    graph = hnswlib.Index(space="ip", dim=DIM)
    graph.load_index(str(store.path))
    some = ids[[0, 7, 250, 499]]
    np.testing.assert_array_equal(reader._index.get_items(some), np.asarray(graph.get_items(some), np.float32))
    assert sorted(reader._index.get_ids_list().tolist()) == sorted(graph.get_ids_list())
    with pytest.raises(RuntimeError):
        reader._index.get_items(np.array([10**6]))


def test_a_mapped_reader_with_sparse_ids(tmp_path):
    """Ids far above the element count (a catalogue that deleted most of its vectors)."""
    src, store, ids, rng = make(tmp_path, 6000)
    src.delete(SPACE, MODEL, ids[ids % 16 != 0])
    assert store.checkpoint()["element_count"] == 375
    reader = mapped_reader(tmp_path, src)
    assert_same_as_exact(reader, unit(rng, 4), 10)
    assert reader.stats()["scan"] and reader._index._table.ndim == 2


def corrupt_repeated_labels(store: VectorStore, src) -> None:
    """A real file whose labels were rewritten to repeat (same size, valid header)."""
    graph = hnswlib.Index(space="ip", dim=DIM)
    graph.load_index(str(store.path))
    n = graph.element_count
    labels = np.asarray(graph.get_ids_list())
    data = bytearray(store.path.read_bytes())
    size_per = hnsw_file.HEADER.unpack_from(data, 0)[3]
    label_off = hnsw_file.HEADER.unpack_from(data, 0)[4]
    for i in range(n):
        at = hnsw_file.HEADER.size + i * size_per + label_off
        data[at : at + 8] = int(labels[0]).to_bytes(8, "little")
    store.path.write_bytes(bytes(data))
    state = src.get_ann_state(SPACE, MODEL)
    state["checksum"] = file_checksum(store.path)
    src.put_ann_state(SPACE, MODEL, state)


@pytest.mark.parametrize("corrupt", [*INVALID_FILES, corrupt_repeated_labels])
def test_a_mapped_reader_answers_exactly_from_a_damaged_file(tmp_path, corrupt):
    src, store, _, rng = make(tmp_path, 300)
    store.checkpoint()
    corrupt(store, src)
    before = store.path.read_bytes() if store.path.exists() else None
    reader = mapped_reader(tmp_path, src)
    assert_same_as_exact(reader, unit(rng, 8), 10)
    assert reader.degraded and reader.stats()["mode"] == "exact"
    assert (store.path.read_bytes() if store.path.exists() else None) == before  # nothing written
    if corrupt is corrupt_repeated_labels:
        assert reader.degraded == "index labels repeat"


def test_a_bit_flip_behind_the_header_is_found_by_the_full_check_for_a_mapped_reader_too(tmp_path):
    src, store, _, rng = make(tmp_path, 300)
    store.checkpoint()
    corrupt_bit_flip(store, src)
    assert mapped_reader(tmp_path, src).verify().startswith("checksum mismatch")


def test_a_writer_never_maps(tmp_path):
    src, store, _, rng = make(tmp_path, 300)
    store.checkpoint()
    writer = VectorStore(tmp_path / "ann", src, SPACE, MODEL, DIM, exact_threshold=0, mapped=True)
    writer.search(unit(rng, 1), 3)
    assert not writer.stats()["scan"]
    src.add(SPACE, MODEL, unit(rng, 5))
    assert writer.checkpoint()["build"] == "incremental"
