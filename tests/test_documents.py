"""xmr.documents: the document policy, the junk guard, and reading PDF and HTML."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.make_fixtures import MANUAL_PAGES, TIDE_POOLS_HTML, hex_junk, make_pdf, random_text
from xmr import documents
from xmr.documents import (
    HTML,
    PDF,
    PLAIN,
    Decision,
    Document,
    Policy,
    decide,
    extract,
    is_junk,
    join_pages,
    read_document,
    split_document,
)
from xmr.errors import MediaError
from xmr.preprocess.html import html_text
from xmr.preprocess.text import Passage

MEDIA = Path(__file__).resolve().parent.parent / "fixtures" / "media"
PROSE = "The keeper climbed the stairs of the lighthouse every evening to light the lamp before dusk.\n"


# --- the policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.txt", "a.md", "a.markdown", "a.rst", "a.org", "a.adoc", "a.tex", "A.TXT"])
def test_plain_text_and_notes_are_documents(name: str) -> None:
    assert decide(name, "x = 1; y = {}") == Decision(PLAIN)  # the name is enough


@pytest.mark.parametrize("name", ["page.html", "page.htm", "page.xhtml"])
def test_html_by_name(name: str) -> None:
    assert decide(name, "hello") == Decision(HTML)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("app.py", documents.SOURCE_CODE),
        ("index.js", documents.SOURCE_CODE),
        ("main.c", documents.SOURCE_CODE),
        ("style.css", documents.SOURCE_CODE),
        ("Makefile", documents.SOURCE_CODE),
        ("CMakeLists.txt", documents.SOURCE_CODE),  # the name wins over .txt
        ("data.json", documents.DATA),
        ("table.csv", documents.DATA),
        ("conf.yaml", documents.DATA),
        ("pyproject.toml", documents.DATA),
        ("font.bdf", documents.DATA),
        ("feed.xml", documents.MARKUP),
        ("logo.svg", documents.MARKUP),
        ("server.log", documents.LOG),
    ],
)
def test_code_data_markup_and_logs_are_not_documents(name: str, reason: str) -> None:
    assert decide(name, PROSE) == Decision(None, reason)  # even when their content reads like prose


def test_files_without_a_telling_name_are_decided_by_content() -> None:
    assert decide("LICENSE", PROSE * 3) == Decision(PLAIN)
    assert decide("notes.jpg", PROSE) == Decision(PLAIN)  # text behind a media extension
    assert decide("README", "# Title\n\n" + PROSE) == Decision(PLAIN)
    assert decide("saved-page", "<!DOCTYPE html><html><body>hi</body></html>") == Decision(HTML)
    assert decide("run", "#!/bin/sh\necho the keeper climbed the stairs\n") == Decision(None, documents.MACHINE_TEXT)
    assert decide("blob", hex_junk(1)) == Decision(None, documents.MACHINE_TEXT)
    assert decide("x.weird", "int main(void) { return f(a[1], b[2]); }\n" * 5) == Decision(
        None, documents.MACHINE_TEXT
    )


def test_extra_extensions_are_plain_text() -> None:
    policy = Policy.with_extensions(["py", ".LOG", "*.csv"])
    assert policy.extra == frozenset({".py", ".log", ".csv"})
    assert decide("app.py", "import os", policy=policy) == Decision(PLAIN)
    assert decide("a.log", "x", policy=policy) == Decision(PLAIN)
    assert decide("a.json", "{}", policy=policy).kind is None
    with pytest.raises(ValueError):
        documents.normalise_extension(" . ")


def test_pdf_is_read_as_pdf() -> None:
    assert decide("paper.pdf", "", pdf=True) == Decision(PDF)
    assert decide("paper.bin", "", pdf=True) == Decision(PDF)


# --- the junk guard ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "00000010: 4865 6c6c 6f20 776f 726c 6421 0a00 ffee",
        "aGVsbG8gd29ybGQgdGhpcyBpcyBiYXNlNjQgZW5jb2RlZCB0ZXh0IHRoYXQgZ29lcyBvbg==",
        "var a=function(b,c){return b[c]^0xdeadbeef};var d=a(1,2);for(var e=0;e<d;e++){f(e)}",
        "0xdeadbeef 0xcafebabe 0x8badf00d 0xfeedface 0xabad1dea",
        "3.14 2.71 1.41 1.73 2.23 42 17 99",
        "",
    ],
)
def test_junk_is_recognised(text: str) -> None:
    assert is_junk(text)


@pytest.mark.parametrize(
    "text",
    [
        PROSE,
        "Mix 500 g of flour with 350 g of water, then add 10 g of salt (about 2%).",
        "Les cafés de Paris — “À bientôt!” — c’est naïf.",
        "日本語の文章はスペースなしで続きます。これは普通の文です。",
        "Call me at 555-0100 or e-mail the keeper, it's fine.",
        "The decade was a façade; they would accede.",  # words made of hex letters
    ],
)
def test_prose_is_not_junk(text: str) -> None:
    assert not is_junk(text)


def test_all_junk_needs_every_window_to_be_junk() -> None:
    assert documents.all_junk(hex_junk(2))
    assert not documents.all_junk(hex_junk(2) + PROSE * 20)
    assert not documents.all_junk("")


# --- HTML ---------------------------------------------------------------------------------------------


def test_html_keeps_the_title_and_visible_text_only() -> None:
    text = " ".join(html_text(TIDE_POOLS_HTML).split())
    assert text.startswith("Tide pools of the rocky shore Tide pools At low tide")
    assert "sea anemones open their tentacles" in text
    assert "put every stone back" in text
    for dropped in ("trackerSecret", "zebra quantum marmalade", "font-family", "Gift shop", "Copyright", "About us"):
        assert dropped not in text


def test_html_edge_cases() -> None:
    # block elements separate words, inline ones do not; hidden elements and unclosed chrome are dropped
    markup = (
        "<p>one</p><p>two<br>three</p><b>fo</b>ur<div hidden>secret</div>"
        "<nav><ul><li>menu</nav><p>after &amp; more</p><script>if (a < b) x()</script>"
    )
    assert html_text(markup).split() == ["one", "two", "three", "four", "after", "&", "more"]


def test_html_meta_charset(tmp_path: Path) -> None:
    p = tmp_path / "old.html"
    p.write_bytes('<html><head><meta charset="koi8-r"></head><body>Привет</body></html>'.encode("koi8-r"))
    assert extract(p, HTML).text == "Привет"


# --- PDF ------------------------------------------------------------------------------------------------


def test_pdf_pages_and_their_offsets() -> None:
    doc = extract(MEDIA / "documents/manual.pdf", PDF)
    assert doc.pages is not None and [n for n, _, _ in doc.pages] == [1, 2, 3]
    for (number, start, end), lines in zip(doc.pages, MANUAL_PAGES, strict=True):
        assert doc.text[start:end] == " ".join(lines), number


def test_scanned_pdf_has_no_text_layer() -> None:
    path = MEDIA / "documents/scanned.pdf"
    assert read_document(path, path.read_bytes()[:8192]) == (None, documents.NO_TEXT_LAYER)


def test_broken_pdf_is_a_media_error(tmp_path: Path) -> None:
    p = tmp_path / "broken.pdf"
    p.write_bytes(b"%PDF-1.4\n" + b"garbage " * 100)
    with pytest.raises(MediaError, match="cannot read PDF"):
        extract(p, PDF)


def test_pdf_blank_pages_are_left_out(tmp_path: Path) -> None:
    p = make_pdf(tmp_path / "gaps.pdf", [["first page"], [], ["third page"]])
    doc = extract(p, PDF)
    assert doc.text == "first page third page"
    assert doc.pages == ((1, 0, 10), (3, 11, 21))


def test_passages_never_span_pages() -> None:
    doc = join_pages([(1, "alpha beta gamma"), (2, "delta epsilon")])

    def split(text: str) -> list[Passage]:  # two words a passage
        words = text.split()
        out, pos = [], 0
        for i in range(0, len(words), 2):
            chunk = " ".join(words[i : i + 2])
            start = text.index(chunk, pos)
            out.append(Passage(chunk, start, start + len(chunk)))
            pos = start + len(chunk)
        return out

    got = split_document(doc, split)
    assert [(p.text, page) for p, page in got] == [("alpha beta", 1), ("gamma", 1), ("delta epsilon", 2)]
    assert all(doc.text[p.start : p.end] == p.text for p, _ in got)
    plain = split_document(Document("one two three"), split)
    assert [(p.text, page) for p, page in plain] == [("one two", None), ("three", None)]


def test_read_document_skips_what_is_not_a_document(tmp_path: Path) -> None:
    code = tmp_path / "app.py"
    code.write_text("print('hello')\n")
    assert read_document(code, code.read_bytes()) == (None, documents.SOURCE_CODE)
    junk = tmp_path / "dump.txt"
    junk.write_text(hex_junk(3))
    assert read_document(junk, junk.read_bytes()[:8192]) == (None, documents.NO_READABLE_TEXT)
    note = tmp_path / "note.md"
    note.write_text(random_text(4))
    doc, skip = read_document(note, note.read_bytes())
    assert skip is None and doc is not None and doc.text.startswith(random_text(4).split()[0])
