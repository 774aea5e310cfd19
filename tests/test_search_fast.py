"""What a repeated or read-only search costs and touches (deterministic test encoders)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import fake_encoders
import numpy as np
import pytest
from test_indexer import make_text

from xmr import paths
from xmr.catalogue import SCHEMA_VERSION, Catalogue
from xmr.indexer import IndexOptions, index
from xmr.query import QueryPart, parse_query
from xmr.search import SearchOptions, search

pytestmark = pytest.mark.usefixtures("fake_encoders")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "media"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    shutil.copytree(FIXTURES, root)
    index([root], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    return root


def _search(parts, **opts):
    if isinstance(parts, str):
        parts = parse_query(parts)
    return search(parts, index_dir=paths.index_dir(), options=SearchOptions(**opts))


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        # the caches may change; so does the WAL index (-shm), which every SQLite reader updates,
        # and a reader creates an empty WAL where the last writer closed cleanly (it holds nothing)
        if p.is_file()
        and "cache" not in p.relative_to(folder).parts
        and not p.name.endswith("-shm")
        and not (p.name.endswith("-wal") and p.stat().st_size == 0)
    }


def test_a_repeated_query_reuses_its_embedding(media: Path) -> None:
    first = _search("a lighthouse on the coast", k=5)
    calls = dict(fake_encoders.CALLS)
    again = _search("a lighthouse on the coast", k=5)
    assert fake_encoders.CALLS == calls  # no encoder ran
    assert [(r.path, r.score) for r in again.results] == [(r.path, r.score) for r in first.results]
    # the same file content under another name is the same query
    img = media / "images" / "gradient.jpg"
    copy = media.parent / "elsewhere.jpg"
    shutil.copy(img, copy)
    _search([QueryPart("image", str(img))], k=3)
    calls = dict(fake_encoders.CALLS)
    assert _search([QueryPart("image", str(copy))], k=3).results[0].path == str(img)
    assert fake_encoders.CALLS == calls
    # another text is embedded
    _search("something else entirely", k=3)
    assert fake_encoders.CALLS["texts"] > calls["texts"]


def test_the_embedding_cache_is_bounded(media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xmr import query_cache

    monkeypatch.setattr(query_cache, "MAX_ENTRIES", 5)
    for i in range(12):
        _search(f"query number {i}", k=1)
    db = query_cache.cache_dir(paths.index_dir()) / "queries.db"
    import sqlite3

    with sqlite3.connect(db) as conn:
        keys = conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
    assert keys == 5


def test_a_repeated_query_does_no_o_n_catalogue_work(media: Path) -> None:
    _search("a lighthouse on the coast", k=5)
    calls: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        # (below the exact threshold a store still reads its few vectors: that is the search itself)
        for name in ("live_vector_ids", "group_vector_ids", "segment_kinds"):
            orig = getattr(Catalogue, name)

            def spy(self, *a, _orig=orig, _name=name, **k):
                calls.append(_name)
                return _orig(self, *a, **k)

            mp.setattr(Catalogue, name, spy)
        _search("a lighthouse on the coast", k=5)
        assert calls == []
    # a change to the vectors is a new generation: the arrays are derived again
    make_text(media / "text" / "new.txt", 77)
    index([media], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    res = _search([QueryPart("text_file", str(media / "text" / "new.txt"))], k=1)
    assert res.results[0].path == str(media / "text" / "new.txt")


def test_min_score_does_not_grow_the_fetch_towards_n(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 30 long texts of many passages each: a fetch of k*5 passages collapses to fewer than k files,
    # so without a threshold the fetch must grow; with one, the first fetch already falls below it
    root = tmp_path / "many"
    root.mkdir()
    for i in range(30):
        make_text(root / f"t{i}.txt", i, words=3000)
    index([root], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    from xmr.retrieval.groups import GroupSearch

    fetched: list[int] = []

    orig = GroupSearch.hits

    def spy(self, plan, k_fetch):
        fetched.append(k_fetch)
        return orig(self, plan, k_fetch)

    monkeypatch.setattr(GroupSearch, "hits", spy)
    k = 40  # more than there are files
    full = _search("unrelated words here", k=k)
    assert len(full.results) == 30
    assert max(fetched) > k * 5  # without a threshold the fetch grew to try to fill k
    fetched.clear()
    res = _search("unrelated words here", k=k, min_score=3.0)
    assert all(r.score >= 3.0 for r in res.results) and len(res.results) < 30
    assert fetched and max(fetched) == k * 5  # the first fetch was enough to see every group fall below 3.0


def test_search_writes_nothing_to_the_index(media: Path) -> None:
    index_dir = paths.index_dir()
    before = _digest(index_dir)
    _search("a lighthouse on the coast", k=5)
    _search([QueryPart("image", str(media / "images" / "gradient.jpg"))], k=5)
    assert _digest(index_dir) == before


_SEARCH_CHILD = """
import json, os, sys
from pathlib import Path
from xmr.query import parse_query
from xmr.search import search
res = search(parse_query(sys.argv[2]), index_dir=Path(sys.argv[1]))
print(json.dumps([r.path for r in res.results]))
"""


def test_search_works_on_an_index_directory_it_cannot_write(media: Path) -> None:
    """A copy of the index, owned by root and read-only to everyone; the search runs as 'nobody'."""
    base = Path(tempfile.mkdtemp(prefix="xmr-ro-"))
    try:
        ro = base / "index"
        shutil.copytree(paths.index_dir(), ro)
        shutil.rmtree(ro / "cache", ignore_errors=True)
        for p in [base, *ro.rglob("*"), ro]:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        want = [r.path for r in _search("a lighthouse on the coast").results]
        cmd = [sys.executable, "-c", _SEARCH_CHILD, str(ro), "a lighthouse on the coast"]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            assert setpriv, "util-linux setpriv is needed to drop root privileges for this test"
            cmd = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
        env = {**os.environ, "HOME": str(base), "XMR_MODELS_DIR": str(base / "no-models")}
        child = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        assert child.returncode == 0, child.stderr
        assert json.loads(child.stdout) == want
        assert not (ro / "cache").exists()
    finally:
        for p in [base, *base.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        shutil.rmtree(base)


def test_state_cache_arrays_equal_the_catalogue(media: Path) -> None:
    from xmr.query_cache import CachedSource, StateCache

    _search("a lighthouse on the coast", k=5)
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        src = CachedSource(cat, StateCache(paths.index_dir(), cat.generation()))
        for space in ("clip", "clap"):
            model = cat.active_model(space)
            assert np.array_equal(src.live_vector_ids(space, model), cat.live_vector_ids(space, model))
            assert src.segment_kinds(space, model) == cat.segment_kinds(space, model)
            assert cat.vector_count(space, model) == len(cat.live_vector_ids(space, model))


def test_search_reads_a_catalogue_one_index_behind_without_migrating(media: Path) -> None:
    """Migration 5 only adds an index: a reader accepts a version-4 catalogue as it is (search never
    migrates), gets the same results, and the next writer adds the index."""
    want = [(r.path, r.score) for r in _search("a lighthouse on the coast", k=5, exact=True).results]
    with Catalogue.open(paths.index_dir()) as cat:
        cat.conn.execute("DROP INDEX vectors_group")
        cat.conn.execute("PRAGMA user_version = 4")
    shutil.rmtree(paths.index_dir() / "cache", ignore_errors=True)
    got = [(r.path, r.score) for r in _search("a lighthouse on the coast", k=5, exact=True).results]
    assert got == want
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == 4
    with Catalogue.open(paths.index_dir()) as cat:  # a writer migrates
        assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in cat.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "vectors_group" in names
        plan = " ".join(
            str(r)
            for r in cat.conn.execute(
                "EXPLAIN QUERY PLAN SELECT v.id FROM vectors v JOIN segments s ON s.id = v.segment_id"
                " WHERE v.space = 'clip' AND v.model_id = 'm' AND s.kind = 'image'"
            )
        )
        assert "COVERING INDEX vectors_group" in plan
    # one schema too old for a reader is still refused with a clear message
    with Catalogue.open(paths.index_dir()) as cat:
        cat.conn.execute("PRAGMA user_version = 3")
    with pytest.raises(Exception, match="needs a migration"):
        Catalogue.open(paths.index_dir(), readonly=True)


def test_a_repeated_query_does_not_open_the_vector_index(media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer cache: the same query on the same catalogue generation and ANN files reuses what
    the vector index returned; a new file, another filter or --exact asks the index again."""
    from xmr.store.hnsw import HnswStore as VectorStore

    first = _search("a lighthouse on the coast", k=5)
    opened: list[str] = []  # the spaces whose vector index was asked (or opened)
    for name in ("_ensure_open", "search", "exact_search"):
        real = getattr(VectorStore, name)

        def counting(self: VectorStore, *args: object, _real=real, **kw: object) -> object:
            opened.append(self.space)
            return _real(self, *args, **kw)

        monkeypatch.setattr(VectorStore, name, counting)
    again = _search("a lighthouse on the coast", k=5)
    assert opened == []
    assert [(r.path, r.score, r.best.vector_id) for r in again.results] == [
        (r.path, r.score, r.best.vector_id) for r in first.results
    ]
    _search("a lighthouse on the coast", k=5, types=["image"])  # another group set: the image group is cached
    assert opened == []
    _search("a lighthouse on the coast", k=5, under=[str(media / "text")])
    assert opened  # candidates restricted to a folder: a new answer
    opened.clear()
    make_text(media / "text" / "new_note.txt", 7)
    index([media], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    after = _search("a lighthouse on the coast", k=5)
    assert opened  # a new generation
    assert after.results
    opened.clear()
    _search("a lighthouse on the coast", k=5, exact=True)  # --exact is answered apart
    assert opened


def test_the_first_search_after_indexing_finds_its_state_prepared(media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`xmr index` derives the per-generation arrays (ids per kind, kind counts, backgrounds) after
    its last commit, so even the first search reads none of them from the catalogue."""
    from xmr import calibrate

    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("derived from the catalogue during the search")

    with pytest.MonkeyPatch.context() as mp:
        for name in ("group_vector_ids", "live_vector_ids", "segment_kinds"):
            mp.setattr(Catalogue, name, refuse)
        mp.setattr(calibrate, "_fetch", refuse)
        first = _search("a lighthouse on the coast", k=5)
    assert first.results
    # the same arrays as a search derives itself
    shutil.rmtree(paths.index_dir() / "cache")
    again = _search("a lighthouse on the coast", k=5)
    assert [(r.path, r.score) for r in again.results] == [(r.path, r.score) for r in first.results]


def test_every_catalogue_lookup_of_a_search_uses_an_index_not_a_walk(media: Path) -> None:
    """A search's per-result lookups (files by hash, segments by vector id) must not scan a
    table: at 100k files, SQLite walking files_status instead of files_hash cost 28 ms a query."""
    import sqlite3

    plans: list[tuple[str, str]] = []
    real_open = Catalogue.open

    def traced_open(*args, **kwargs):
        cat = real_open(*args, **kwargs)
        sqls: list[str] = []
        cat.conn.set_trace_callback(sqls.append)
        cat._traced_sqls = sqls  # type: ignore[attr-defined]
        opened.append(cat)
        return cat

    opened: list[Catalogue] = []
    mp = pytest.MonkeyPatch()
    mp.setattr(Catalogue, "open", staticmethod(traced_open))
    try:
        _search("dog barking", k=5)
    finally:
        mp.undo()
    sqls = [s for cat in opened for s in cat._traced_sqls if "FROM files" in s and " IN (" in s]  # type: ignore[attr-defined]
    assert sqls, "no per-result file lookup seen"
    with sqlite3.connect(f"file:{paths.index_dir() / 'catalogue.db'}?mode=ro", uri=True) as conn:
        for sql in sqls:
            plan = " | ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
            plans.append((sql, plan))
    for sql, plan in plans:
        assert "files_status" not in plan and "SCAN files" not in plan, (sql, plan)


def test_a_copy_of_indexed_content_into_an_under_folder_is_found_next_time(media: Path) -> None:
    """The copy adds a files row but no vector: the generation stays, the --under answer must not."""
    src = next(p for p in sorted((media / "text").iterdir()) if p.suffix in (".txt", ".md"))
    folder = media / "later"
    folder.mkdir()
    make_text(folder / "own.txt", 3)
    index([media], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    q = src.read_text(encoding="utf-8")[:200]
    first = _search(q, k=5, under=[str(folder)])
    assert {r.path for r in first.results} == {str(folder / "own.txt")}
    generation = Catalogue.open(paths.index_dir(), readonly=True).generation()
    shutil.copy2(src, folder / "copy.txt")
    index([media], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    assert Catalogue.open(paths.index_dir(), readonly=True).generation() == generation  # no new vector
    again = _search(q, k=5, under=[str(folder)])
    assert str(folder / "copy.txt") in {r.path for r in again.results}


def test_damaged_cache_entries_are_misses_not_failures(media: Path) -> None:
    import sqlite3

    first = _search("a lighthouse on the coast", k=5)
    cache = paths.index_dir() / "cache"
    with sqlite3.connect(cache / "queries.db") as conn:
        assert conn.execute("UPDATE embeddings SET vectors = x'00'").rowcount
        assert conn.execute("UPDATE answers SET ids = x'0000'").rowcount
    states = list(cache.glob("state-*.npy"))
    assert states
    for p in states:
        p.write_bytes(b"")
    again = _search("a lighthouse on the coast", k=5)
    assert [(r.path, r.score) for r in again.results] == [(r.path, r.score) for r in first.results]
