"""The query cache's keys: another xmr version, and another reading of the same bytes, are misses."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import fake_encoders
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
