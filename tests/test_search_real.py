"""Index and search the fixtures with the REAL encoders (random weights).

The default architectures (OpenCLIP ViT-B-32, LAION-CLAP HTSAT-tiny) are built
with random weights, saved as checkpoint files and loaded through the
user-facing options, exactly as a user's downloaded weights would be. Semantic
quality cannot be asserted with random weights; routing, self-retrieval and
the shape of the results can.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from xmr.catalogue import Catalogue
from xmr.indexer import IndexOptions, index
from xmr.query import QueryPart, parse_query
from xmr.search import SearchOptions, search
from xmr.settings import Settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "media"
CONCEPTS = [
    "dog barking",
    "church bells",
    "waves crashing on a beach",
    "violin",
    "thunderstorm",
    "a busy city street",
    "birds singing in a forest",
    "piano",
    "crowd cheering",
    "rain on a window",
    "a lighthouse",
    "bread baking in an oven",
    "stars at night",
    "a garden with flowers",
    "a cafe",
    "a person speaking",
]


@pytest.fixture(scope="module")
def real_env(real_models: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("real-search")
    concepts = root / "concepts.txt"
    concepts.write_text("\n".join(CONCEPTS) + "\n")
    media = root / "media"
    shutil.copytree(FIXTURES, media)
    return {
        **real_models,
        "XMR_CONCEPTS": str(concepts),
        "XMR_CONCEPTS_ONLY": "1",
        "media": str(media),
        "index": str(root / "index"),
    }


@pytest.fixture
def indexed(real_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    for key, value in real_env.items():
        if key.startswith("XMR_"):
            monkeypatch.setenv(key, value)
    media, index_dir = Path(real_env["media"]), Path(real_env["index"])
    if not (index_dir / "catalogue.db").exists():
        report = index([media], index_dir=index_dir, settings=Settings.from_env(), options=IndexOptions(workers=1))
        assert report.failed == 6 and report.embedded_files > 20
    return media, index_dir


def _run(parts: list[QueryPart], index_dir: Path, **opts: object):
    return search(parts, index_dir=index_dir, settings=Settings.from_env(), options=SearchOptions(**opts))


def test_index_records_real_models_and_routes_modalities(indexed: tuple[Path, Path]) -> None:
    _, index_dir = indexed
    with Catalogue.open(index_dir, readonly=True) as cat:
        models = {m["space"]: m for m in cat.models()}
        assert models["clip"]["name"] == "ViT-B-32" and models["clip"]["dim"] == 512
        assert models["clip"]["checkpoint_sha256"] and models["clap"]["checkpoint_sha256"]
        assert models["clip"]["preprocessing"]["size"] and models["clap"]["dim"] == 512
        rows = cat.conn.execute(
            "SELECT f.modality, s.space, s.kind, COUNT(*) FROM files f JOIN segments s ON s.hash = f.hash"
            " WHERE f.status = 'indexed' GROUP BY 1, 2, 3"
        ).fetchall()
    routes = {(m, sp, k) for m, sp, k, _ in rows}
    assert routes == {
        ("image", "clip", "image"),
        ("audio", "clap", "audio_window"),
        ("text", "clip", "text_passage"),
        ("text", "clap", "text_passage"),
    }


def test_every_fixture_finds_itself_first(indexed: tuple[Path, Path]) -> None:
    _, index_dir = indexed
    with Catalogue.open(index_dir, readonly=True) as cat:
        files = sorted(
            (r[0], r[1]) for r in cat.conn.execute("SELECT path, modality FROM files WHERE status = 'indexed'")
        )
    kind = {"image": "image", "audio": "audio", "text": "text_file"}
    assert {m for _, m in files} == {"image", "audio", "text"}
    misses = []
    for path, modality in files:
        res = _run([QueryPart(kind[modality], path)], index_dir, k=3)
        if res.results[0].path != path:
            misses.append((path, [r.path for r in res.results]))
    assert misses == []


def test_text_query_returns_all_three_modalities(indexed: tuple[Path, Path]) -> None:
    _, index_dir = indexed
    res = _run(parse_query("waves on a beach at night"), index_dir, k=100)
    assert {r.modality for r in res.results} == {"image", "audio", "text"}
    spaces = {(r.modality, r.best.space) for r in res.results}
    assert ("image", "clip") in spaces and ("audio", "clap") in spaces


def test_image_to_audio_goes_through_the_bridge(indexed: tuple[Path, Path]) -> None:
    media, index_dir = indexed
    res = _run([QueryPart("image", str(media / "images" / "gradient.jpg"))], index_dir, k=5, types=["audio"])
    assert res.results and all(r.modality == "audio" and r.best.route == "bridge" for r in res.results)
    concepts = next(r for r in res.routes if r.space == "clap").parts[0]["concepts"]
    assert {c["concept"] for c in concepts} <= set(CONCEPTS)


_QUERY_CHILD = """
import json, sys
from pathlib import Path
from xmr.encoders import towers
from xmr.query import QueryPart, parse_query
from xmr.search import search
kind, value, index = sys.argv[1:4]
parts = parse_query(value) if kind == "text" else [QueryPart(kind, value)]
res = search(parts, index_dir=Path(index))
heavy = ("torch", "torchvision", "librosa", "numba", "torchlibrosa", "open_clip", "transformers", "laion_clap",
         "_xmr_laion_clap", "timm", "pandas", "sympy", "wandb")
print(json.dumps({"heavy": sorted(m for m in heavy if m in sys.modules), "towers": sorted(towers.LOADED),
                  "first": res.results[0].path}))
"""


@pytest.mark.parametrize(
    ("kind", "value", "towers"),
    [
        ("text", "waves on a beach at night", {("clip", "text"), ("clap", "text")}),
        ("image", "images/gradient.jpg", {("clip", "image")}),
        ("audio", "audio/chord_c_major.wav", {("clap", "audio")}),
    ],
)
def test_a_query_builds_only_the_towers_it_needs(indexed: tuple[Path, Path], kind: str, value: str, towers) -> None:
    """A fresh process: no torch, no audio front end for text, only the needed towers."""
    import json
    import subprocess
    import sys

    from xmr import core

    media, index_dir = indexed
    core.prepare_query_encoders(index_dir, Settings.from_env())  # exported once (shared models dir)
    if kind != "text":
        value = str(media / value)
    shutil.rmtree(index_dir / "cache", ignore_errors=True)  # an embedding from the query cache would load no tower
    child = subprocess.run(
        [sys.executable, "-c", _QUERY_CHILD, kind, value, str(index_dir)], capture_output=True, text=True, timeout=300
    )
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout)
    assert out["heavy"] == []
    with Catalogue.open(index_dir, readonly=True) as cat:
        ids = {cat.active_model("clip"): "clip", cat.active_model("clap"): "clap"}
    assert {(ids[m], t) for m, t in out["towers"]} == towers
    if kind != "text":
        assert out["first"] == value  # and it finds itself


def test_the_torch_engine_gives_the_same_ranking(indexed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _, index_dir = indexed
    fast = _run(parse_query("waves on a beach at night"), index_dir, k=20)
    shutil.rmtree(index_dir / "cache")  # or the embedding would come from the query cache
    monkeypatch.setenv("XMR_QUERY_ENGINE", "torch")
    slow = _run(parse_query("waves on a beach at night"), index_dir, k=20)
    assert [r.path for r in fast.results] == [r.path for r in slow.results]
    assert max(abs(a.score - b.score) for a, b in zip(fast.results, slow.results, strict=True)) < 1e-3


def test_xmr_eval_on_the_fixtures(
    indexed: tuple[Path, Path], real_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_cli_eval import check_eval_on_indexed_fixtures

    # queries through the backends: exporting ONNX query towers again would double the time
    monkeypatch.setenv("XMR_QUERY_ENGINE", "torch")
    check_eval_on_indexed_fixtures(real_env, tmp_path)
