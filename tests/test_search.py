"""Search through the library API, with the deterministic test encoders.

The same checks run with real random-weight encoders in test_search_real.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_indexer import make_audio, make_image, make_text

from xmr import core, paths
from xmr.catalogue import Catalogue
from xmr.errors import MediaError, NoIndex, PathNotFound, UsageError
from xmr.indexer import IndexOptions, index
from xmr.query import QueryPart, parse_query
from xmr.search import SearchOptions, search
from xmr.store.hnsw import EXACT_THRESHOLD
from xmr.store.hnsw_file import file_checksum, index_file_name

pytestmark = pytest.mark.usefixtures("fake_encoders")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "media"


def _index(*roots: Path) -> None:
    index(list(roots), index_dir=paths.index_dir(), options=IndexOptions(workers=0))


def _search(parts: list[QueryPart] | str, **opts: object):
    if isinstance(parts, str):
        parts = parse_query(parts)
    return search(parts, index_dir=paths.index_dir(), options=SearchOptions(**opts))


def _paths(response) -> list[str]:
    return [r.path for r in response.results]


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    shutil.copytree(FIXTURES, root)
    _index(root)
    return root


def _indexed_files(root: Path) -> list[tuple[str, str]]:
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        return sorted((r.path, r.modality) for r in cat.files_under(str(root)).values() if r.status == "indexed")


def test_every_fixture_finds_itself_first(media: Path) -> None:
    files = _indexed_files(media)
    assert {m for _, m in files} == {"image", "audio", "text"}
    kind = {"image": "image", "audio": "audio", "text": "text_file"}
    for path, modality in files:
        res = _search([QueryPart(kind[modality], path)], k=3)
        assert res.results[0].path == path, (path, _paths(res))


def test_text_query_reaches_all_three_modalities(media: Path) -> None:
    res = _search("a lighthouse on the coast", k=100)
    assert {r.modality for r in res.results} == {"image", "audio", "text"}
    # one result per file, best first
    assert len(set(_paths(res))) == len(res.results)
    scores = [r.score for r in res.results]
    assert scores == sorted(scores, reverse=True)


def test_cross_modal_routes_use_the_bridge(media: Path) -> None:
    img = next(p for p, m in _indexed_files(media) if m == "image")
    res = _search([QueryPart("image", img)], k=50, types=["audio"])
    assert res.results and {r.modality for r in res.results} == {"audio"}
    assert all(r.best.route == "bridge" and r.best.space == "clap" for r in res.results)
    clap_route = next(r for r in res.routes if r.space == "clap")
    concepts = clap_route.parts[0]["concepts"]
    assert len(concepts) >= 1 and abs(sum(c["weight"] for c in concepts) - 1) < 1e-4


def test_filters(media: Path) -> None:
    res = _search("music", k=100, types=["image"])
    assert res.results and all(r.modality == "image" for r in res.results)
    res = _search("music", k=100, under=[str(media / "audio")])
    assert res.results and all(r.path.startswith(str(media / "audio") + os.sep) for r in res.results)
    everything = _search("music", k=1000)
    n_files = len(_indexed_files(media))
    assert len(everything.results) == n_files  # k beyond the count is not an error
    cut = everything.results[3].score
    assert all(r.score >= cut for r in _search("music", k=1000, min_score=cut).results)


def test_audio_hits_carry_their_window_and_text_hits_a_snippet(media: Path) -> None:
    long = str(media / "audio" / "long_35s.ogg")
    res = _search([QueryPart("audio", long)], k=1, all_segments=True)
    best = res.results[0]
    assert best.path == long
    assert best.best.start_s is not None and best.best.end_s > best.best.start_s
    assert len(best.segments) >= 4  # every 10 s window of the 35 s file matched
    text = str(media / "text" / "lighthouses_long.txt")
    res = _search([QueryPart("text_file", text)], k=1)
    hit = res.results[0].best
    content = " ".join(Path(text).read_text().split())
    assert hit.snippet and hit.snippet.rstrip("…")[:50] in content


def test_weighted_combined_queries(media: Path) -> None:
    img = str(media / "images" / "gradient.jpg")
    plain = _search([QueryPart("image", img)], k=5)
    assert plain.results[0].path == img
    # subtracting the image itself pushes it away from the top
    res = _search([QueryPart("text", "sunset"), QueryPart("image", img, -2.0)], k=100, types=["image"])
    assert res.results[-1].path == img
    parts = parse_query('"dog" + 2:"beach" - "people"', images=[img])
    assert [(p.kind, p.weight) for p in parts] == [("text", 1.0), ("text", 2.0), ("text", -1.0), ("image", 1.0)]


def test_changes_between_runs_are_reflected_exactly(media: Path) -> None:
    moved_src = media / "images" / "gradient.jpg"
    moved_dst = media / "elsewhere" / "gradient-moved.jpg"
    deleted = media / "audio" / "chord_c_major.wav"
    modified = media / "text" / "astronomy.txt"
    old_astronomy = modified.read_text()
    moved_dst.parent.mkdir()
    shutil.move(moved_src, moved_dst)
    deleted.unlink()
    modified.write_text("Completely new words about trains, stations and timetables.\n")
    _index(media)

    everything = set(_paths(_search("anything", k=1000)))
    assert str(moved_dst) in everything and str(moved_src) not in everything
    assert str(deleted) not in everything
    assert everything == {p for p, _ in _indexed_files(media)}
    # the modified file is found by its new content, its old content is gone
    assert _search([QueryPart("text_file", str(modified))], k=1).results[0].path == str(modified)
    old_query = media.parent / "old.txt"
    old_query.write_text(old_astronomy)
    res = _search([QueryPart("text_file", str(old_query))], k=3)
    assert res.results[0].best.raw < 0.999  # nothing holds the old passages any more


def test_errors(media: Path, tmp_path: Path) -> None:
    with pytest.raises(PathNotFound):
        parse_query(images=[str(tmp_path / "missing.jpg")])
    with pytest.raises(MediaError):
        parse_query(images=[str(media / "text" / "bread.md")])
    with pytest.raises(MediaError):
        _search([QueryPart("image", str(media / "broken" / "truncated.jpg"))])
    with pytest.raises(UsageError):
        parse_query("   ")
    with pytest.raises(NoIndex):
        search(parse_query("x"), index_dir=tmp_path / "no-index")


def test_query_modality_with_nothing_reachable(tmp_path: Path) -> None:
    root = tmp_path / "only-images"
    root.mkdir()
    make_image(root / "a.png", 1)
    _index(root)
    with pytest.raises(NoIndex, match="nothing of type audio"):
        _search("x", types=["audio"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blob.bin").write_bytes(b"\x00\x01" * 100)
    index([empty], index_dir=tmp_path / "idx2", options=IndexOptions(workers=0))
    with pytest.raises(NoIndex, match="empty"):
        search(parse_query("x"), index_dir=tmp_path / "idx2")


def test_stdin_query() -> None:
    import io

    parts = parse_query("-", stdin=io.StringIO("  a quiet forest  \n"))
    assert parts == [QueryPart("text", "a quiet forest")]


@pytest.fixture
def large(tmp_path: Path) -> Path:
    """Enough vectors for the clip and clap spaces to use the on-disk ANN index."""
    root = tmp_path / "large"
    rng = np.random.default_rng(3)
    words = "amber basalt cedar dune ember fjord glacier heath inlet juniper kelp loam".split()
    for i in range(EXACT_THRESHOLD + 300):
        d = root / f"d{i // 200}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"t{i}.txt").write_text(f"{i} " + " ".join(rng.choice(words, 12)))
    make_image(root / "pic.png", 9)
    make_audio(root / "snd.wav", 9)
    index([root], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    return root


def test_ann_results_match_exact_and_damaged_files_are_answered_exactly_then_rebuilt(large: Path) -> None:
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        model = cat.active_model("clip")
    ann = paths.ann_dir(paths.index_dir()) / index_file_name("clip", model)
    assert ann.exists(), "the clip space is above the exact-search threshold"
    queries = [parse_query(q) for q in ("amber dune", "glacier kelp", "heath")] + [
        [QueryPart("text_file", str(large / "d3" / "t601.txt"))]
    ]

    def ranked(parts: list[QueryPart], exact: bool) -> list[str]:
        return _paths(_search(parts, k=10, exact=exact, types=["text"]))

    exact = [ranked(q, True) for q in queries]
    recall = np.mean([len(set(ranked(q, False)) & set(e)) / len(e) for q, e in zip(queries, exact, strict=True)])
    assert recall >= 0.95
    for damage in ("truncate", "garbage", "bitflip"):
        data = bytearray(ann.read_bytes())
        if damage == "truncate":
            data = data[: len(data) // 2]
        elif damage == "garbage":
            data = bytearray(os.urandom(len(data)))
        else:
            data[len(data) // 2] ^= 0x08  # same size, same header: only the full check sees it
        ann.write_bytes(bytes(data))
        if damage == "bitflip":
            report = core.check(paths.index_dir())
            assert not report["ok"] and any("checksum mismatch" in p for p in report["problems"])
            assert not ann.exists()  # the damaged cache is dropped
        # search never writes: a file it cannot use is answered exactly from the catalogue
        assert [ranked(q, False) for q in queries] == exact
        # the next index run rebuilds a file that matches its state row again
        index([large], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
        with Catalogue.open(paths.index_dir(), readonly=True) as cat:
            state = cat.get_ann_state("clip", model)
        assert ann.stat().st_size == state["file_size"] and file_checksum(ann) == state["checksum"]
        assert core.check(paths.index_dir())["ok"]
        assert np.mean([len(set(ranked(q, False)) & set(e)) / 10 for q, e in zip(queries, exact, strict=True)]) >= 0.95


def test_vectors_committed_after_the_checkpoint_are_found(large: Path) -> None:
    fresh = large / "d0" / "fresh.txt"
    make_text(fresh, 4242, words=10)
    # index without refreshing the ANN file: the new vector exists only in SQLite
    index([large], index_dir=paths.index_dir(), options=IndexOptions(workers=0, checkpoint_ann=False))
    res = _search([QueryPart("text_file", str(fresh))], k=1)
    assert res.results[0].path == str(fresh)


# -- regressions found in review ---------------------------------------------------------------


def test_k_counts_files_even_when_one_long_file_fills_the_candidates(tmp_path: Path) -> None:
    root = tmp_path / "mt"
    root.mkdir()
    make_text(root / "long.txt", 1, words=40_000)  # hundreds of passages
    for i in range(30):
        make_text(root / f"short{i}.txt", 100 + i, words=20)
    _index(root)
    for exact in (False, True):
        assert len(_search("stars", k=10, exact=exact).results) == 10


def test_under_matches_paths_as_indexed_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    make_image(real / "sub" / "a.png", 1)
    make_image(real / "b.png", 2)
    link = tmp_path / "link"
    link.symlink_to(real)
    _index(link)
    res = _search("x", k=10, under=[str(link / "sub")])
    assert _paths(res) == [str(link / "sub" / "a.png")]


def test_a_mistyped_query_path_is_an_error_not_a_text_query(tmp_path: Path) -> None:
    with pytest.raises(PathNotFound):
        parse_query(f"{tmp_path}/nope.jpg")
    with pytest.raises(PathNotFound):
        parse_query("./nope.jpg")
    assert parse_query('"./nope.jpg"') == [QueryPart("text", "./nope.jpg")]
    assert parse_query("AC/DC live") == [QueryPart("text", "AC/DC live")]
