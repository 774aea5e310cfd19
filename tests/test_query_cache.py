"""The query cache's keys: another xmr version, and another reading of the same bytes, are misses."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import fake_encoders
import numpy as np
import pytest

import xmr
from xmr import paths, query_cache
from xmr.indexer import IndexOptions, index
from xmr.query import QueryPart, parse_query
from xmr.search import SearchOptions, search

pytestmark = pytest.mark.usefixtures("fake_encoders")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "media"


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    shutil.copytree(FIXTURES, root)
    index([root], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    return root


def _search(parts: str | list[QueryPart], **opts: object):
    if isinstance(parts, str):
        parts = parse_query(parts)
    return search(parts, index_dir=paths.index_dir(), options=SearchOptions(**opts))


def _rows(table: str) -> int:
    with sqlite3.connect(query_cache.cache_dir(paths.index_dir()) / "queries.db") as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_entries_written_by_another_xmr_version_are_not_reused(media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _search("a lighthouse on the coast", k=5)
    calls = dict(fake_encoders.CALLS)
    _search("a lighthouse on the coast", k=5)
    assert fake_encoders.CALLS == calls  # the same version: a hit
    embeddings, answers = _rows("embeddings"), _rows("answers")
    monkeypatch.setattr(xmr, "__version__", "999.0.0")
    _search("a lighthouse on the coast", k=5)
    assert fake_encoders.CALLS["texts"] > calls["texts"]  # embedded again (in each space)
    assert _rows("embeddings") > embeddings and _rows("answers") > answers  # new entries beside the old


def test_a_text_file_read_as_html_and_as_text_are_different_queries(media: Path, tmp_path: Path) -> None:
    # a fragment that does not start like HTML: its name alone decides how it is read
    body = "Fishing boats return to the harbour at dusk.<script>var lighthouse = 1;</script><p>Gulls &amp; nets</p>\n"
    html, txt, htm = tmp_path / "page.html", tmp_path / "page.txt", tmp_path / "copy.htm"
    for p in (html, txt, htm):
        p.write_text(body)
    assert query_cache.part_key("m", "text_file", str(html)) != query_cache.part_key("m", "text_file", str(txt))
    _search([QueryPart("text_file", str(html))], k=3)
    calls = dict(fake_encoders.CALLS)
    _search([QueryPart("text_file", str(txt))], k=3)
    assert fake_encoders.CALLS["texts"] > calls["texts"]  # the same bytes as plain text: embedded
    calls = dict(fake_encoders.CALLS)
    _search([QueryPart("text_file", str(htm))], k=3)
    assert fake_encoders.CALLS == calls  # the same bytes read the same way under another name: a hit


def test_a_new_cache_file_is_created_in_wal_mode_and_keeps_its_entries(tmp_path: Path) -> None:
    """A fresh queries.db skips the syncs of its creation, not its journal: WAL, synchronous=NORMAL
    for the writes after it, the entries there for the next process."""
    import numpy as np

    cache = query_cache.EmbeddingCache(tmp_path)
    rows = np.arange(8, dtype=np.float32).reshape(2, 4)
    cache.put("k", "m", rows)
    conn = cache._db(create=False)
    assert conn is not None
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    cache.close()
    db = sqlite3.connect(query_cache.cache_dir(tmp_path) / "queries.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    again = query_cache.EmbeddingCache(tmp_path)
    got = again.get("k")
    again.close()
    assert got is not None and np.array_equal(got, rows)
    assert again.get("other") is None


def _state_arrays() -> dict[str, object]:
    """Every derived array a search reads, from the state cache (a CachedSource) and computed afresh."""
    from xmr.catalogue import Catalogue
    from xmr.query_cache import CachedSource, StateCache
    from xmr.spaces import SPACES

    out: dict[str, object] = {}
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        source = CachedSource(cat, StateCache(paths.index_dir(), cat.generation()))
        for space in SPACES:
            model = cat.active_model(space)
            if not model:
                continue
            kinds = source.segment_kinds(space, model)
            assert kinds == cat.segment_kinds(space, model)
            assert source.live_vector_ids(space, model).tolist() == cat.live_vector_ids(space, model).tolist()
            for kind in kinds:
                got = source.group_vector_ids(space, model, kind).tolist()
                assert got == cat.group_vector_ids(space, model, kind).tolist()
                out[f"{space}/{kind}"] = got
    return out


def test_the_search_state_of_a_run_that_only_added_extends_the_last_one(
    media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a run that only added vectors the live ids, per-kind ids and kind counts are the
    last generation's plus the new ones (a full pass took 11 s at 5M); after a deletion they
    are computed again. Both must equal what the catalogue says."""
    from xmr.catalogue.vectors import VectorTables

    calls: list[int] = []
    real = VectorTables.live_vector_ids

    def spy(self, space, model_id, *, after_id=0):
        calls.append(after_id)
        return real(self, space, model_id, after_id=after_id)

    monkeypatch.setattr(VectorTables, "live_vector_ids", spy)
    before = _state_arrays()
    (media / "added.txt").write_text("a lighthouse above the harbour at dusk", encoding="utf-8")
    calls.clear()
    index([media], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    assert calls and all(a > 0 for a in calls), calls  # extended: only the ids after the last generation
    after = _state_arrays()
    assert after != before and all(set(before[k]) <= set(after[k]) for k in before)
    (media / "added.txt").unlink()
    calls.clear()
    index([media], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    assert 0 in calls  # a deletion: computed again
    assert _state_arrays() == before
    from xmr.catalogue import Catalogue

    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        n, top = cat.generation()
    files = list(query_cache.cache_dir(paths.index_dir()).glob("state-*.npy"))
    assert files and all(p.name.startswith(f"state-{n}-{top}-") for p in files)  # older ones dropped by the writer


def test_an_older_array_holding_newer_ids_is_not_extended_twice() -> None:
    # a search may compute a generation's array while a writer commits: ids above its generation's
    from xmr.query_cache import _joined

    old = np.array([1, 4, 9, 12, 15], np.int64)  # computed for a generation whose highest id was 10
    assert _joined(old, 10, np.array([12, 15, 20])).tolist() == [1, 4, 9, 12, 15, 20]
