"""`xmr search` with metadata filters, --sort date and keyword + semantic fusion (fake encoders,
generated photos with EXIF written by Pillow)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke
from meta_fixtures import photo, text_pdf

pytestmark = pytest.mark.usefixtures("fake_encoders")

AMSTERDAM = (52.3702, 4.8952)


def _copies(root: Path, n: int) -> Path:
    """The query picture and ``n`` files with its pixels (so with its vector: each scores as
    identical) and no metadata: the top k by score holds only these."""
    from PIL import Image, PngImagePlugin

    stamp = datetime(2023, 6, 15, 12, 0).timestamp()  # between the photos' dates, outside every range tested
    rng = np.random.default_rng(7)
    img = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", f"copy {i}")  # other bytes, the same pixels
        img.save(root / f"copy{i:02d}.png", pnginfo=info)
        os.utime(root / f"copy{i:02d}.png", (stamp, stamp))
    query = root.parent.parent / "query.png"  # outside the indexed folder
    img.save(query)
    return query


@pytest.fixture
def photos(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "photos"
    trip = root / "trip"
    photo(trip / "may01.jpg", 1, taken="2024:05:01 10:00:00", offset="+02:00", make="Canon", model="EOS R5",
          gps=AMSTERDAM)  # fmt: skip
    # 23:30 on 20 May in New York is 21 May in UTC: still May by the local clock
    photo(trip / "may20.jpg", 2, taken="2024:05:20 23:30:00", offset="-05:00", make="FUJIFILM", model="X100V",
          gps=(40.7128, -74.0060))  # fmt: skip
    # about 1.1 km from may01
    photo(trip / "jun02.jpg", 3, taken="2024:06:02 08:00:00", offset="+00:00", make="Canon", model="EOS 5D",
          gps=(52.3800, 4.9000))  # fmt: skip
    bare = photo(trip / "old.jpg", 4)  # no EXIF: its date is its mtime
    stamp = datetime(2023, 1, 15, 12, 0).timestamp()
    os.utime(bare, (stamp, stamp))
    query = _copies(root / "copies", 12)
    assert invoke("index", str(root), "--quiet", "--workers", "0").exit_code == 0
    return root, query


def _paths(*args: str) -> list[str]:
    res = invoke("search", *args, "--json")
    assert res.exit_code == 0, res.stderr
    return [Path(r["path"]).name for r in json.loads(res.stdout)["results"]]


def test_the_top_k_by_score_holds_none_of_the_filtered_files(photos: tuple[Path, Path]) -> None:
    _, query = photos
    assert all(p.startswith("copy") for p in _paths("--image", str(query), "-k", "12"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--after", "2024-05-01", "--before", "2024-06-01"], {"may01.jpg", "may20.jpg"}),
        (["--after", "2024-05-21", "--before", "2025-01-01"], {"jun02.jpg"}),  # may20: 20 May where it was taken
        # an instant: may20 was taken at 04:30 UTC on 21 May
        (["--after", "2024-05-21T00:00Z", "--before", "2025-01-01"], {"may20.jpg", "jun02.jpg"}),
        (["--before", "2023-02-01"], {"old.jpg"}),  # no EXIF: its modification time
        (["--camera", "canon"], {"may01.jpg", "jun02.jpg"}),
        (["--camera", "x100"], {"may20.jpg"}),
        (["--near", f"{AMSTERDAM[0]},{AMSTERDAM[1]}"], {"may01.jpg"}),  # 1 km by default
        (["--near", f"{AMSTERDAM[0]},{AMSTERDAM[1]},2"], {"may01.jpg", "jun02.jpg"}),
        (["--near", "40.7,-74.0,5", "--camera", "fuji"], {"may20.jpg"}),
        (["--camera", "leica"], set()),
    ],
)
def test_each_filter_returns_exactly_its_files(photos: tuple[Path, Path], args: list[str], expected: set[str]) -> None:
    _, query = photos
    found = _paths("--image", str(query), "-k", "10", *args)
    assert set(found) == expected and len(found) == len(expected)


def test_sort_date_orders_the_top_k_newest_first(photos: tuple[Path, Path]) -> None:
    _, query = photos
    res = invoke("search", "--image", str(query), "--camera", "canon", "--sort", "date", "--json")
    results = json.loads(res.stdout)["results"]
    assert [Path(r["path"]).name for r in results] == ["jun02.jpg", "may01.jpg"]
    assert results[0]["date"] == "2024-06-02T08:00:00+00:00"
    found = _paths("--image", str(query), "--near", "0,0,20000", "--sort", "date", "--exact")
    assert found == ["jun02.jpg", "may20.jpg", "may01.jpg"]
    # without a filter: the whole top k, newest first, undated files by modification time
    everything = _search_all("--image", str(query), "-k", "100", "--sort", "date")
    names = [Path(r["path"]).name for r in everything]
    assert names[:3] == ["jun02.jpg", "may20.jpg", "may01.jpg"] and names[-1] == "old.jpg" and len(names) == 16
    assert all(r["date"].startswith("2023-06-15") for r in everything[3:-1])


def _search_all(*args: str) -> list[dict]:
    res = invoke("search", *args, "--json")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)["results"]


def test_bad_filter_values_are_usage_errors(photos: tuple[Path, Path]) -> None:
    for args in (["--after", "May"], ["--near", "52.3"], ["--near", "95,0"], ["--sort", "size"]):
        res = invoke("search", "x", *args)
        assert res.exit_code == 2, args
        assert args[0] in res.stderr or "sort" in res.stderr


@pytest.fixture
def words(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "misc").mkdir(parents=True)
    # one by name only (a picture), one by meaning only (its text is the query), one by both
    photo(root / "tide-tables.jpg", 11)
    (root / "notes-a.txt").write_text("tide tables")
    (root / "misc" / "tide-tables.txt").write_text("tide tables")
    text_pdf(root / "harbour-invoice.pdf", "Invoice number 4711 for berth fees")
    text_pdf(root / "invoice-2023.pdf", "Invoice number 12 for paint")
    photo(root / "harbour-photo.jpg", 12)
    (root / "harbour-master.txt").write_text("the master of the port keeps the log")
    (root / "master-of-the-harbour.txt").write_text("a story about a ship")
    for i in range(12):
        photo(root / "misc" / f"IMG_{i:04d}.jpg", 100 + i)
        (root / "misc" / f"note{i}.txt").write_text(f"shopping list number {i}: bread, milk and {i} apples")
    assert invoke("index", str(root), "--quiet", "--workers", "0").exit_code == 0
    return root


def _search(*args: str) -> list[dict]:
    res = invoke("search", *args, "--json")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)["results"]


def test_both_rank_above_meaning_above_name(words: Path) -> None:
    results = _search("tide tables", "--explain")
    names = [Path(r["path"]).name for r in results]
    assert names[:3] == ["tide-tables.txt", "notes-a.txt", "tide-tables.jpg"]
    both, meaning, name = results[:3]
    assert both["explain"]["keyword"]["score"] > 0 and both["explain"]["semantic_score"] >= 10
    assert meaning["explain"]["keyword"] is None
    assert name["explain"]["keyword"]["score"] > 0 and name["explain"]["semantic_score"] < 5
    assert both["score"] > meaning["score"] > name["score"]


def test_harbour_invoice_finds_the_file_named_so_first(words: Path) -> None:
    assert Path(_search("harbour invoice")[0]["path"]).name == "harbour-invoice.pdf"


def test_keyword_only_semantic_only_and_phrases(words: Path) -> None:
    assert {Path(r["path"]).name for r in _search("tide tables", "--keyword-only")} == {
        "tide-tables.txt",
        "tide-tables.jpg",
    }
    assert {Path(r["path"]).name for r in _search("tide tables", "--semantic-only", "-k", "2")} == {
        "tide-tables.txt",
        "notes-a.txt",
    }
    loose = {Path(r["path"]).name for r in _search("harbour master", "--keyword-only")}
    assert {"harbour-master.txt", "master-of-the-harbour.txt"} <= loose
    phrase = [Path(r["path"]).name for r in _search('"harbour master"', "--keyword-only")]
    assert phrase == ["harbour-master.txt"]


def test_explain_table_shows_the_keyword_part(words: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from xmr.cli import _render_results_table
    from xmr.query import parse_query
    from xmr.search import SearchOptions, search

    response = search(parse_query("tide tables"), options=SearchOptions(k=3, keyword_text="tide tables"))
    _render_results_table(response, explain=True, all_segments=False)
    out = capsys.readouterr().out
    assert "keyword: bm25=" in out and "rank 1" in out and "semantic: " in out


def test_the_api_and_the_cli_through_the_server_filter_alike(photos: tuple[Path, Path]) -> None:
    from server_helpers import running_server

    from xmr import paths

    _, query = photos
    with running_server(paths.index_dir()) as server:
        doc = server.search({"q": "anything", "camera": "canon", "sort": "date", "k": 5}).json()
        assert [Path(r["path"]).name for r in doc["results"]] == ["jun02.jpg", "may01.jpg"]
        near = server.search({"q": "anything", "near": [AMSTERDAM[0], AMSTERDAM[1], 2]}).json()
        assert {Path(r["path"]).name for r in near["results"]} == {"may01.jpg", "jun02.jpg"}
        bad = server.search({"q": "anything", "after": "soon"})
        assert bad.status == 400 and "--after" in bad.json()["error"]
        api = server.request("GET", "/api/openapi.json").json()
        assert "near" in json.dumps(api) and "keywords" in json.dumps(api)
        # the CLI hands its filters to the running server
        found = _paths("--image", str(query), "--after", "2024-05-01", "--before", "2024-06-01")
        assert set(found) == {"may01.jpg", "may20.jpg"} and len(found) == 2


def test_document_text_reaches_the_keyword_index_only_with_store_snippets(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    root.mkdir()
    (root / "trip.txt").write_text("we sailed from the port of zanzibar at dawn and the sea was calm all day")
    (root / "list.txt").write_text("bread, milk, butter and eggs for the weekend")
    plain, stored = tmp_path / "plain", tmp_path / "stored"
    assert invoke("index", str(root), "--quiet", "--workers", "0", "--index", str(plain)).exit_code == 0
    args = ["index", str(root), "--quiet", "--workers", "0", "--index", str(stored), "--store-snippets"]
    assert invoke(*args).exit_code == 0
    assert _search("zanzibar", "--keyword-only", "--index", str(plain)) == []
    found = _search("zanzibar", "--keyword-only", "--index", str(stored))
    assert [Path(r["path"]).name for r in found] == ["trip.txt"]
    # a file's name is always there
    assert [Path(r["path"]).name for r in _search("trip", "--keyword-only", "--index", str(plain))] == ["trip.txt"]


def test_the_explain_table_through_a_running_server(words: Path) -> None:
    from server_helpers import running_server

    from xmr import paths
    from xmr.client import remote_search
    from xmr.query import parse_query

    with running_server(paths.index_dir()):
        request = {"k": 3, "explain": True, "keywords": "tide tables"}
        response = remote_search(paths.index_dir(), parse_query("tide tables"), request)
        assert response is not None
        first = response.results[0]
        assert Path(first.path).name == "tide-tables.txt"
        assert first.keyword is not None and first.keyword["rank"] >= 1 and first.semantic_score >= 10
