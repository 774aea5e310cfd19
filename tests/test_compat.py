"""An index written by an older xmr still opens: searched and re-indexed as it is.

The fixture (tests/fixtures_data/index-707921b, made by tests/make_old_index.py with
the code at 707921b and the deterministic test encoders) holds the catalogue, the clap
ANN file and the top results that old code gave for a few queries.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tarfile
from pathlib import Path

import fake_encoders
import pytest
from make_old_index import FIXTURE, MEDIA_SOURCES, QUERIES, SYNTH, WINDOW_S, build_collection, run_queries

from xmr.catalogue import SCHEMA_VERSION, Catalogue
from xmr.indexer import IndexOptions, index

pytestmark = pytest.mark.usefixtures("fake_encoders")


def _digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


@pytest.fixture
def old_index(tmp_path: Path) -> tuple[Path, Path, dict]:
    """(index dir, collection root, expected) with the collection where the index expects it."""
    expected = json.loads((FIXTURE / "expected.json").read_text())
    with tarfile.open(FIXTURE / "index.tar.xz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "media"
    build_collection(root, FIXTURE / "media")
    # the index was made elsewhere: move its paths (only files rows hold any) to this copy,
    # as if the collection and the index had been moved together
    old = expected["root"]
    conn = sqlite3.connect(tmp_path / "index" / "catalogue.db")
    with conn:
        conn.execute(
            "UPDATE files SET path = ? || substr(path, ?), root = ? || substr(root, ?)",
            (str(root), len(old) + 1, str(root), len(old) + 1),
        )
    conn.close()
    return tmp_path / "index", root, expected


def _ann_files(index_dir: Path) -> dict[str, tuple[str, int]]:
    return {f.name: (_digest(f), f.stat().st_mtime_ns) for f in (index_dir / "ann").glob("*.hnsw")}


def _same_results(got: list[dict], expected: list[dict]) -> None:
    assert [q["value"] for q in got] == [q["value"] for q in expected]
    for g, e in zip(got, expected, strict=True):
        assert [(r["path"], r["space"]) for r in g["results"]] == [(r["path"], r["space"]) for r in e["results"]], g
        assert [r["score"] for r in g["results"]] == pytest.approx([r["score"] for r in e["results"]], abs=2e-4)


def test_the_fixture_is_what_the_tests_expect() -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    assert expected["commit"] == "707921b"
    assert [{"kind": q["kind"], "value": q["value"]} for q in expected["queries"]] == QUERIES
    assert all(len(q["results"]) == 5 for q in expected["queries"])


def test_old_index_answers_the_same_without_a_rebuild(old_index: tuple[Path, Path, dict]) -> None:
    index_dir, root, expected = old_index
    ann = _ann_files(index_dir)
    assert len(ann) == 1  # the clap space is above the exact-search threshold
    with Catalogue.open(index_dir, readonly=True) as cat:
        vectors_before = cat.generation()

    _same_results(run_queries(index_dir, root), expected["queries"])
    assert _ann_files(index_dir) == ann
    # keyword fusion and metadata filters on a catalogue without their tables (read, not migrated)
    from xmr.filters import Filters
    from xmr.query import QueryPart
    from xmr.search import SearchOptions, search

    options = SearchOptions(k=50, filters=Filters(camera="canon"))
    assert search([QueryPart("text", "a lighthouse")], index_dir=index_dir, options=options).results == []
    fused = search([QueryPart("text", "tide pools")], index_dir=index_dir, options=SearchOptions(k=3))
    assert len(fused.results) == 3 and all(r.keyword is None for r in fused.results)

    built = len(fake_encoders.BUILT)
    report = index(
        [root], index_dir=index_dir, options=IndexOptions(workers=0, audio_window_s=WINDOW_S, audio_hop_s=WINDOW_S)
    )
    assert report.failed == 0, report.errors
    assert report.unchanged == len(MEDIA_SOURCES) + 1 and report.new == report.changed == 0
    assert report.embedded_files == 0 and report.segments == 0 and report.removed == 0
    assert fake_encoders.BUILT[built:] == []  # no model was even loaded
    assert _ann_files(index_dir) == ann
    with Catalogue.open(index_dir, readonly=True) as cat:
        assert cat.generation() == vectors_before
        assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert cat.file_by_path(str(root / SYNTH)).status == "indexed"

    _same_results(run_queries(index_dir, root), expected["queries"])
    assert _ann_files(index_dir) == ann
