"""Indexing documents end to end (issue 9's acceptance checks), with the deterministic test encoders.

The fake encoders give a passage a vector derived from its exact text, so a
query equal to a passage finds it with cosine 1: "findable" here means that
some passage holds exactly that text.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import fake_encoders
import pytest
from cli_helpers import invoke

from fixtures.make_fixtures import MANUAL_PAGES, NOTES_SAILING, hex_junk, make_project, random_text
from xmr import core, documents, paths
from xmr.catalogue import Catalogue
from xmr.indexer import IndexOptions, index
from xmr.preprocess.text import normalise
from xmr.query import QueryPart
from xmr.search import SearchOptions, search

pytestmark = pytest.mark.usefixtures("fake_encoders")

MEDIA = Path(__file__).resolve().parent.parent / "fixtures" / "media"
HERON = " ".join(MANUAL_PAGES[1])  # the whole of page 2: one passage


def _index(root: Path, **opts: object):
    return index([root], index_dir=paths.index_dir(), options=IndexOptions(workers=0, checkpoint_ann=False, **opts))


def _search(text: str = "", *, image: Path | None = None, k: int = 5):
    part = QueryPart("image", str(image)) if image else QueryPart("text", text)
    return search([part], index_dir=paths.index_dir(), options=SearchOptions(k=k, exact=True))


def _copy(tmp_path: Path, *rels: str) -> Path:
    root = tmp_path / "media"
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(MEDIA / rel, root / rel)
    return root


def _rows(root: Path) -> dict[str, tuple[str | None, str, str | None, int]]:
    """relative path -> (modality, status, reason, number of vectors)."""
    out = {}
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        for path, modality, status, error, h in cat.conn.execute(
            "SELECT path, modality, status, error, hash FROM files"
        ).fetchall():
            n = cat.conn.execute(
                "SELECT COUNT(*) FROM vectors v JOIN segments s ON s.id = v.segment_id WHERE s.hash = ?", (h,)
            ).fetchone()[0]
            out[os.path.relpath(path, root)] = (modality, status, error, n)
    return out


# --- 1. a software project: only the documents and the screenshots get vectors -------------------------


def test_software_project_indexes_only_documents_and_pictures(tmp_path: Path) -> None:
    root = tmp_path / "widget-tools"
    made = make_project(root, node_modules=2000)
    report = _index(root)

    rows = _rows(root)
    rel = {group: {os.path.relpath(p, root) for p in files} for group, files in made.items()}
    with_vectors = {r for r, (_, _, _, n) in rows.items() if n}
    assert with_vectors == rel["documents"] | rel["images"]
    assert {"README.md", "docs/install.md", "docs/usage.md", "docs/manual.pdf"} <= with_vectors
    for r in rel["skipped"]:
        modality, status, reason, n = rows[r]
        assert status == "skipped" and n == 0, r
        assert reason and reason.startswith("not a document ("), (r, reason)
    assert rows["node_modules/pkg000/lib/m0.js"][2] == documents.SOURCE_CODE
    assert rows["data/readings.csv"][2] == documents.DATA
    assert rows["assets/logo.svg"][2] == documents.MARKUP
    assert rows["build.log"][2] == documents.LOG

    assert report.failed == 0
    assert report.skipped == len(rel["skipped"]) > 2000
    assert report.skipped_by_reason[documents.SOURCE_CODE] == 2000 + 4  # node_modules, .py x2, .js, Makefile
    assert sum(report.skipped_by_reason.values()) == report.skipped
    assert report.embedded_files == len(rel["documents"]) + len(rel["images"])

    status = core.status(paths.index_dir())
    assert status["skipped_by_reason"] == report.skipped_by_reason
    # and the CLI shows them
    out = invoke("status").stdout
    assert f"skipped: {2004} {documents.SOURCE_CODE}" in out

    # a re-run opens none of the skipped files again
    again = _index(root)
    assert again.unchanged == again.found and again.files_read == 0


def test_text_ext_adds_an_extension_later(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    make_project(root, node_modules=3)
    _index(root)
    assert _rows(root)["src/widget/usb.py"][1] == "skipped"
    report = _index(root, text_extensions=[".py"])
    rows = _rows(root)
    assert rows["src/widget/usb.py"][1:2] == ("indexed",) and rows["src/widget/usb.py"][3] > 0
    assert rows["src/app.js"][1] == "skipped"
    assert report.embedded_files == 2  # the two .py files, re-read although unchanged on disk


def test_text_ext_option_and_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    make_project(root, node_modules=3)
    monkeypatch.setenv("XMR_TEXT_EXT", "csv")
    result = invoke("index", str(root), "--workers", "0", "--text-ext", "py", "--text-ext", ".JS", "--json")
    assert result.exit_code == 0, result.stderr
    rows = _rows(root)
    for r in ("src/widget/usb.py", "src/app.js", "data/readings.csv", "node_modules/pkg000/lib/m0.js"):
        assert rows[r][1] == "indexed", r
    assert rows["package.json"][1] == "skipped"
    bad = invoke("index", str(root), "--text-ext", ".")
    assert bad.exit_code == 2 and "--text-ext" in bad.stderr


# --- 2. PDF pages and HTML visible text ---------------------------------------------------------------


def test_pdf_phrase_on_page_two_is_found_with_its_page(tmp_path: Path) -> None:
    root = _copy(tmp_path, "documents/manual.pdf", "documents/scanned.pdf", "text/astronomy.txt")
    report = _index(root)
    assert report.failed == 0
    assert report.skipped_by_reason == {documents.NO_TEXT_LAYER: 1}  # the scan: skipped, not an error

    best = _search(HERON).results[0]
    assert best.path == str(root / "documents/manual.pdf")
    assert best.as_dict()["page"] == 2
    assert best.best.snippet == HERON

    result = invoke("search", HERON, "--json", "-k", "1")
    r = json.loads(result.stdout)["results"][0]
    assert (r["path"], r["page"], r["snippet"]) == (str(root / "documents/manual.pdf"), 2, HERON)
    info = invoke("info", str(root / "documents/manual.pdf")).stdout
    assert "page 2" in info and "page 3" in info


def test_html_body_is_findable_and_its_script_is_not(tmp_path: Path) -> None:
    root = _copy(tmp_path, "documents/tide_pools.html", "text/astronomy.txt", "text/bread.md")
    _index(root)
    page = root / "documents/tide_pools.html"
    doc = documents.extract(page, documents.HTML)
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        spans = cat.conn.execute(
            "SELECT s.char_start, s.char_end FROM segments s JOIN files f ON f.hash = s.hash"
            " WHERE f.path = ? AND s.space = 'clip' ORDER BY s.seq",
            (str(page),),
        ).fetchall()
    passages = [doc.text[a:b] for a, b in spans]
    assert passages and all("marmalade" not in p and "trackerSecret" not in p for p in passages)
    assert any("sea anemones open their tentacles" in p for p in passages)

    best = _search(passages[0]).results[0]  # the body text finds the page
    assert best.path == str(page) and best.score >= 10
    script = 'var trackerSecret = "zebra quantum marmalade";'
    hits = _search(script, k=10).results
    assert all(h.score < 10 for h in hits)  # nothing holds the script's text
    assert all("marmalade" not in (h.best.snippet or "") for h in hits)


# --- 3. photos and ASCII image formats; junk --------------------------------------------------------------


def test_heic_xpm_xbm_eps_are_images_and_hex_junk_yields_no_vectors(tmp_path: Path) -> None:
    root = _copy(
        tmp_path,
        "images/photo.heic",
        "images/scene.xpm",
        "images/glyph.xbm",
        "images/drawing.eps",
        "images/bayer.dng",
        "images/gradient.jpg",
        "text/hexdump.txt",
    )
    report = _index(root)
    assert report.failed == 0, report.errors
    rows = _rows(root)
    for r in ("images/photo.heic", "images/scene.xpm", "images/glyph.xbm", "images/drawing.eps", "images/bayer.dng"):
        assert rows[r][:2] == ("image", "indexed") and rows[r][3] == 1, r
    assert rows["text/hexdump.txt"] == ("text", "skipped", documents.NO_READABLE_TEXT, 0)

    heic = root / "images/photo.heic"
    results = _search(image=heic).results
    assert results[0].path == str(heic) and results[0].modality == "image"


def test_eps_without_ghostscript_is_skipped_not_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _copy(tmp_path, "images/drawing.eps", "images/gradient.jpg")
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in path.split(os.pathsep) if not (Path(p) / "gs").exists()))
    assert shutil.which("gs") is None
    report = _index(root)
    assert report.failed == 0 and report.skipped_by_reason == {"needs Ghostscript": 1}
    assert _rows(root)["images/drawing.eps"][:3] == ("image", "skipped", "needs Ghostscript")
    # once Ghostscript is back, --retry-errors picks it up
    monkeypatch.setenv("PATH", path)
    again = _index(root, retry_errors=True)
    assert again.embedded_files == 1 and _rows(root)["images/drawing.eps"][1] == "indexed"


def test_junk_passages_are_dropped_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    root.mkdir()
    mixed = root / "mixed.txt"
    mixed.write_text(random_text(5, 120) + "\n" + hex_junk(6, 60) + "\n" + random_text(7, 120), encoding="utf-8")
    _index(root)
    info = core.info(mixed, paths.index_dir())
    assert {e["space"] for e in info["encodings"]} == {"clip", "clap"}
    for enc in info["encodings"]:
        assert enc["dropped_as_junk"] > 0 and enc["n_segments"] > 0
    out = invoke("info", str(mixed)).stdout
    assert "passage(s) dropped as junk" in out
    doc = documents.extract(mixed, documents.PLAIN)
    for seg in info["encodings"][0]["segments"]:
        assert not documents.is_junk(doc.text[seg["char_start"] : seg["char_end"]])


# --- 4. privacy: offsets, not text, in the catalogue -------------------------------------------------------


def _catalogue_bytes() -> bytes:
    db = paths.catalogue_path(paths.index_dir())
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())


SENTENCES = (
    "Reef the mainsail early when the wind rises above twenty knots",
    "Jupiter with its four large moons",
    "The blue heron nests by the quiet lake",
    "sea anemones open their tentacles",
)


def test_catalogue_holds_no_passage_text_by_default_and_snippets_still_show(tmp_path: Path) -> None:
    root = _copy(
        tmp_path, "text/notes.jpg", "text/astronomy.txt", "documents/manual.pdf", "documents/tide_pools.html"
    )
    result = invoke("index", str(root), "--workers", "0", "--quiet")
    assert result.exit_code == 0, result.stderr
    data = _catalogue_bytes()
    assert data  # the catalogue is there, and holds none of the sentences
    for sentence in SENTENCES:
        assert sentence.encode() not in data, sentence

    # snippets are read from the files when shown
    first = fake_encoders.FakeClip(None).split_text(normalise(NOTES_SAILING))[0].text
    assert "Reef the mainsail early" in first
    out = json.loads(invoke("search", first, "--json", "-k", "10").stdout)
    assert (out["results"][0]["path"], out["results"][0]["snippet"]) == (str(root / "text/notes.jpg"), first)
    snippets = {r["path"]: r.get("snippet") for r in out["results"]}
    assert all(snippets[str(root / rel)] for rel in ("text/astronomy.txt", "documents/tide_pools.html"))
    out = json.loads(invoke("search", HERON, "--json", "-k", "1").stdout)
    assert (out["results"][0]["snippet"], out["results"][0]["page"]) == (HERON, 2)

    # a file changed since indexing says so instead of showing a wrong snippet
    notes = root / "text/notes.jpg"
    notes.write_text("Completely different words now.\n" + NOTES_SAILING, encoding="utf-8")
    out = json.loads(invoke("search", first, "--json", "-k", "10").stdout)
    changed = next(r for r in out["results"] if r["path"] == str(notes))
    assert "snippet" not in changed and changed["snippet_note"] == "changed since indexing"


def test_store_snippets_keeps_the_text(tmp_path: Path) -> None:
    root = _copy(tmp_path, "text/notes.jpg", "documents/manual.pdf")
    result = invoke("index", str(root), "--workers", "0", "--quiet", "--store-snippets")
    assert result.exit_code == 0, result.stderr
    data = _catalogue_bytes()
    assert SENTENCES[0].encode() in data and SENTENCES[2].encode() in data
    (root / "text/notes.jpg").unlink()  # the stored text is shown even when the file is gone
    best = _search(HERON).results[0]
    assert best.best.snippet == HERON and best.best.page == 2


def test_snippet_of_a_file_gone_since_indexing(tmp_path: Path) -> None:
    root = _copy(tmp_path, "text/astronomy.txt", "text/bread.md")
    _index(root)
    passage = " ".join((MEDIA / "text/astronomy.txt").read_text().split())[:120].rsplit(" ", 1)[0]
    target = root / "text/astronomy.txt"
    target.rename(root / "text/moved.txt")
    hits = [r for r in _search(passage, k=5).results if r.path == str(target)]
    assert hits and hits[0].best.snippet is None and hits[0].best.snippet_note == "file no longer readable"


# --- 5. the README --------------------------------------------------------------------------------------------


def test_readme_documents_the_policy_and_the_options() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    for needle in ("### Documents", "--text-ext", "XMR_TEXT_EXT", "--store-snippets", "not a document", "pypdfium2"):
        assert needle in readme, needle
    help_text = invoke("index", "--help").stdout
    assert "--text-ext" in help_text and "--store-snippets" in help_text



def test_a_pdf_or_html_file_as_the_query(tmp_path: Path) -> None:
    root = _copy(tmp_path, "documents/manual.pdf", "documents/tide_pools.html", "text/astronomy.txt")
    _index(root)
    for rel in ("documents/manual.pdf", "documents/tide_pools.html"):
        part = QueryPart("text_file", str(root / rel))
        best = search([part], index_dir=paths.index_dir(), options=SearchOptions(k=1, exact=True)).results[0]
        assert best.path == str(root / rel) and best.score >= 10
