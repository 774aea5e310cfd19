"""The Milvus backend end to end, on milvus-lite in this process: ``xmr index --store``,
search against the hnswlib backend, ``xmr status --check`` and ``--rebuild-store``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke

from xmr.catalogue import Catalogue
from xmr.store import BACKEND_SETTING, index_backend, open_index
from xmr.store.factory import URI_SETTING, store_spec
from xmr.store.milvus import MilvusIndex, client, close_clients

REPO = Path(__file__).resolve().parent.parent
QUERIES = ["a lighthouse on the coast", "ocean surf noise", "gradient", "a short note", "picture"]

pytestmark = pytest.mark.usefixtures("fake_encoders")


@pytest.fixture
def media(tmp_path: Path) -> Path:
    return Path(shutil.copytree(REPO / "fixtures" / "media", tmp_path / "media"))


def _no_exact(*args: object, **kw: object) -> None:
    raise AssertionError("searched exactly instead of in Milvus")


def _top10(index_dir: Path, query: str, *extra: str) -> list[tuple[str, float]]:
    res = invoke("search", query, "--index", str(index_dir), "-k", "10", "--json", *extra)
    assert res.exit_code == 0, res.stderr
    return [(r["path"], round(r["score"], 4)) for r in json.loads(res.stdout)["results"]]


def test_milvus_and_hnswlib_give_the_same_top_10(media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "vectors.db"
    milvus_idx, hnsw_idx = tmp_path / "idx-milvus", tmp_path / "idx-hnsw"
    # a FLAT (exhaustive) Milvus index: its answers must be the exact ones; hnswlib answers
    # collections this small exactly (HNSW is approximate on both sides, filtered HNSW more so)
    store = f"milvus-lite:{db}?index=FLAT"
    res = invoke("index", str(media), "--index", str(milvus_idx), "--workers", "0", "--store", store)
    assert res.exit_code == 0, res.stderr
    assert invoke("index", str(media), "--index", str(hnsw_idx), "--workers", "0").exit_code == 0
    with Catalogue.open(milvus_idx, readonly=True) as cat:
        want_uri = f"milvus-lite:{db.resolve()}?index=FLAT"
        assert index_backend(cat) == "milvus" and cat.get_setting(URI_SETTING) == want_uri
        # every catalogue vector is in its collection
        for model in cat.models():
            store = open_index("milvus", milvus_idx / "ann", cat, model["space"], model["id"], int(model["dim"]))
            assert store.count() == cat.vector_count(model["space"], model["id"]) > 0
    with Catalogue.open(hnsw_idx, readonly=True) as cat:
        assert cat.get_setting(BACKEND_SETTING) == "hnswlib"
    for query in QUERIES:
        for mode in ((), ("--exact",), ("--type", "image"), ("--type", "text")):
            with monkeypatch.context() as m:
                if mode != ("--exact",):  # answered by Milvus, never by the exact fallback
                    m.setattr(MilvusIndex, "exact_search", _no_exact)
                got = _top10(milvus_idx, query, *mode)
            want = _top10(hnsw_idx, query, *mode)
            assert [p for p, _ in got] == [p for p, _ in want], (query, mode)
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=2e-4)
            assert got, (query, mode)


def test_a_new_process_searches_in_milvus(media: Path, tmp_path: Path, xmr_cmd: list[str]) -> None:
    """A fresh process finds the collection released (it loads it) and milvus-lite unlocked."""
    idx = tmp_path / "idx"
    store = f"milvus-lite:{tmp_path / 'vectors.db'}"
    assert invoke("index", str(media), "--index", str(idx), "--workers", "0", "--store", store).exit_code == 0
    want = _top10(idx, "a lighthouse on the coast", "--exact")
    close_clients()  # this process lets go of the database
    proc = subprocess.run(
        [*xmr_cmd, "search", "a lighthouse on the coast", "--index", str(idx), "-k", "10", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "searching exactly" not in proc.stderr  # the fallback's notice: Milvus answered
    got = [(r["path"], round(r["score"], 4)) for r in json.loads(proc.stdout)["results"]]
    assert [p for p, _ in got] == [p for p, _ in want]


def test_status_check_compares_milvus_with_the_catalogue_and_rebuild_repairs(media: Path, tmp_path: Path) -> None:
    db, idx = tmp_path / "vectors.db", tmp_path / "idx"
    assert (
        invoke("index", str(media), "--index", str(idx), "--workers", "0", "--store", f"milvus-lite:{db}").exit_code
        == 0
    )
    assert invoke("status", "--index", str(idx), "--check").exit_code == 0
    with Catalogue.open(idx, readonly=True) as cat:
        model = cat.active_model("clip")
        store = open_index("milvus", idx / "ann", cat, "clip", model, int(cat.model_row(model)["dim"]))
        victim = int(cat.live_vector_ids("clip", model)[0])
        client(store.uri).delete(store.collection, ids=[victim])  # the server lost a vector
    res = invoke("status", "--index", str(idx), "--check")
    assert res.exit_code != 0 and "Milvus holds" in res.stdout + res.stderr
    assert invoke("index", str(media), "--index", str(idx), "--workers", "0", "--rebuild-store").exit_code == 0
    assert invoke("status", "--index", str(idx), "--check").exit_code == 0


def test_a_removed_file_leaves_milvus_too(media: Path, tmp_path: Path) -> None:
    db, idx = tmp_path / "vectors.db", tmp_path / "idx"
    assert (
        invoke("index", str(media), "--index", str(idx), "--workers", "0", "--store", f"milvus-lite:{db}").exit_code
        == 0
    )
    gone = media / "images" / "gray.png"
    gone.unlink()
    assert invoke("index", str(media), "--index", str(idx), "--workers", "0").exit_code == 0
    assert str(gone) not in [p for p, _ in _top10(idx, "gray", "--type", "image")]
    with Catalogue.open(idx, readonly=True) as cat:
        model = cat.active_model("clip")
        store = open_index("milvus", idx / "ann", cat, "clip", model, int(cat.model_row(model)["dim"]))
        assert store.count() == cat.vector_count("clip", model)
        assert set(store.milvus_ids().tolist()) == set(cat.live_vector_ids("clip", model).tolist())


def test_store_spec() -> None:
    assert store_spec("hnswlib") == ("hnswlib", None)
    assert store_spec("milvus://127.0.0.1:19530") == ("milvus", "milvus://127.0.0.1:19530")
    backend, uri = store_spec("milvus-lite:rel.db?index=FLAT")
    assert backend == "milvus" and uri == f"milvus-lite:{Path('rel.db').resolve()}?index=FLAT"
