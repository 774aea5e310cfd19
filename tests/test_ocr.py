"""OCR (issue 23): the engine with RapidOCR's real PP-OCRv6 weights, and text in pixels through the
indexer, search, snippets, `xmr info` and the catalogue.

Text images and the scanned PDF are rendered here with PIL (DejaVu Sans when installed, else
PIL's built-in font at the same size). The pipeline tests use the deterministic test encoders
(a query equal to a passage finds it with cosine 1); the ``slow`` ones the default architectures
with random weights (tests/conftest.py ``real_models``).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import invoke
from test_indexer import Details

from xmr import core, paths
from xmr.catalogue import Catalogue
from xmr.indexer import IndexOptions, index
from xmr.ocr import engine
from xmr.ocr.engine import OcrOptions
from xmr.query import QueryPart
from xmr.search import SearchOptions, search
from xmr.settings import Settings

SIGN = "lighthouse keeper breakfast"
RECEIPT = ["ACME HARDWARE", "copper nails and brass hinges", "thank you for shopping"]
PAGES = ["the heron nests by the quiet river", "tide tables for the northern harbour", "mooring fees are due in april"]


def font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def text_image(lines: list[str], size: tuple[int, int] = (1000, 260), px: int = 44, at: tuple[int, int] = (40, 50)):
    """Dark lines of text on a light, slightly uneven background; returns (image, each line's bbox)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(len(lines) + size[0])
    base = (235 + rng.integers(-8, 8, (size[1], size[0], 1))).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(np.repeat(base, 3, axis=2))
    draw = ImageDraw.Draw(img)
    boxes = []
    x, y = at
    for line in lines:
        draw.text((x, y), line, font=font(px), fill=(20, 20, 25))
        boxes.append(draw.textbbox((x, y), line, font=font(px)))
        y += int(px * 1.9)
    return img, boxes


def photo(path: Path, seed: int = 0) -> None:
    """A photo-like picture without text: smooth colour gradients and soft blobs."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx / w * 200 + 30), (yy / h * 150 + 60), (np.sin(xx / 40.0) * 40 + 120)], axis=-1)
    for _ in range(6):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(20, 80)
        rgb[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] *= 0.7
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(3)).save(path)


def scanned_pdf(path: Path, pages: list[str]) -> None:
    """A PDF of rendered pages only (images, no text layer), as a scanner makes."""
    rendered = [text_image([t], size=(1240, 1754), px=46, at=(100, 300))[0] for t in pages]
    rendered[0].save(path, save_all=True, append_images=rendered[1:], resolution=150.0)


def dense_texture(words: int = 900):
    """Hundreds of tiny words packed over the picture: thousands of candidate boxes for the detector."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(7)
    img = Image.new("RGB", (1400, 1400), (250, 250, 250))
    draw = ImageDraw.Draw(img)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    for _ in range(words):
        word = "".join(rng.choice(letters, 4))
        draw.text((int(rng.integers(0, 1350)), int(rng.integers(0, 1380))), word, font=font(12), fill=(0, 0, 0))
    return img


def make_collection(root: Path, *, pdf: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    text_image([SIGN], size=(900, 200))[0].save(root / "sign.png")
    text_image(RECEIPT, size=(900, 420))[0].save(root / "receipt.jpg", quality=92)
    photo(root / "meadow.png")
    if pdf:  # OCR of its pages costs most of the collection's time
        scanned_pdf(root / "scan.pdf", PAGES)
    return root


def catalogue_text(index_dir: Path) -> str:
    """Everything the catalogue holds, as SQL text: what a privacy check looks through."""
    con = sqlite3.connect(paths.catalogue_path(index_dir))
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


def _index(root: Path, **opts: Any):
    return index([root], index_dir=paths.index_dir(), options=IndexOptions(workers=0, checkpoint_ann=False, **opts))


def _search(text: str, index_dir: Path | None = None, **opts: Any):
    options = SearchOptions(**{"k": 5, "exact": True, **opts})
    return search([QueryPart("text", text)], index_dir=index_dir or paths.index_dir(), options=options)


# --- the engine ----------------------------------------------------------------------------------------


# a generous time limit: on a loaded machine one image can take over the default 30 s, and
# these tests are about what is read, not about the limit
SLOW_OK = OcrOptions(time_limit_s=900.0)


def test_engine_reads_lines_with_their_boxes_in_the_given_pixels() -> None:
    img, drawn = text_image(RECEIPT, size=(900, 420))
    result = engine.read(img, options=SLOW_OK)
    assert [ln.text for ln in result.lines] == RECEIPT
    assert all(ln.score > 0.9 for ln in result.lines)
    assert result.models["det"].startswith("PP-OCRv6_det") and result.models["rec"].startswith("PP-OCRv6_rec")
    assert not result.truncated
    for ln, (x0, y0, x1, y1) in zip(result.lines, drawn, strict=True):
        xs, ys = [p[0] for p in ln.box], [p[1] for p in ln.box]
        # the box holds the drawn text, give or take a few pixels of the detector's margin
        assert min(xs) <= x0 + 6 and max(xs) >= x1 - 6 and min(ys) <= y0 + 6 and max(ys) >= y1 - 6
        assert max(xs) - min(xs) < (x1 - x0) + 60


def test_a_huge_image_is_downscaled_but_boxes_stay_in_its_pixels() -> None:
    img, drawn = text_image([SIGN], size=(6000, 900), px=150, at=(300, 300))
    result = engine.read(img, options=replace(SLOW_OK, max_side=2048))
    assert [ln.text for ln in result.lines] == [SIGN]
    (x0, y0, x1, y1), box = drawn[0], result.lines[0].box
    # read at a third of the size: a box left in those pixels would be ~2,000 px off; the detector's
    # margin around a line grows with its height (150 px here)
    slack = 0.4 * (y1 - y0)
    assert abs(min(p[0] for p in box) - x0) < slack and abs(max(p[0] for p in box) - x1) < slack
    assert abs(min(p[1] for p in box) - y0) < slack and abs(max(p[1] for p in box) - y1) < slack


def test_recognise_reads_stored_boxes_without_the_detector() -> None:
    img, _ = text_image(RECEIPT, size=(900, 420))
    boxes = [ln.box for ln in engine.read(img, options=SLOW_OK).lines]
    again = engine.recognise(img, boxes[1:])
    assert [ln.text for ln in again] == RECEIPT[1:]


def test_a_dense_texture_is_bounded_by_the_line_cap() -> None:
    result = engine.read(dense_texture(), options=replace(SLOW_OK, max_lines=25))
    assert result.boxes_found > 25  # the detector found more than the cap
    assert len(result.lines) <= 25 and result.truncated
    assert "text boxes found" in (result.note or "")


def test_rapidocr_says_nothing_on_the_terminal(tmp_path: Path) -> None:
    """RapidOCR logs at INFO when imported and built: a fresh process reading an image prints nothing."""
    import subprocess
    import sys

    img, _ = text_image([SIGN], size=(900, 200))
    img.save(tmp_path / "sign.png")
    code = (
        "import sys; from PIL import Image; from xmr.ocr import engine; "
        "r = engine.read(Image.open(sys.argv[1]), options=engine.OcrOptions(time_limit_s=900)); assert r.lines, r"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "sign.png")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


# --- through the indexer (test encoders) -----------------------------------------------------------


@pytest.fixture
def collection(tmp_path: Path, fake_encoders: None) -> Path:
    return make_collection(tmp_path / "media")


@pytest.fixture
def images(tmp_path: Path, fake_encoders: None) -> Path:
    """The collection without its scanned PDF."""
    return make_collection(tmp_path / "media", pdf=False)


def _segments(index_dir: Path) -> dict[str, list[tuple[str, str, str | None, int | None]]]:
    """file name -> [(space, kind, origin, page)] of its segments."""
    out: dict[str, list[tuple[str, str, str | None, int | None]]] = {}
    with Catalogue.open(index_dir, readonly=True) as cat:
        for path, space, kind, origin, page in cat.conn.execute(
            "SELECT f.path, s.space, s.kind, s.origin, s.page FROM files f JOIN segments s ON s.hash = f.hash"
            " ORDER BY f.path, s.space, s.seq"
        ):
            out.setdefault(Path(path).name, []).append((space, kind, origin, page))
    return out


def test_text_in_images_and_scanned_pdfs_becomes_passages_in_both_spaces(collection: Path) -> None:
    report = _index(collection, ocr="all")
    assert report.failed == 0 and report.embedded_files == 4
    segs = _segments(paths.index_dir())
    assert segs["sign.png"] == [
        ("clap", "text_passage", "ocr", None),
        ("clip", "image", None, None),
        ("clip", "text_passage", "ocr", None),
    ]
    assert [s for s in segs["meadow.png"] if s[1] == "image"] == [("clip", "image", None, None)]
    # the scanned PDF: a document with one OCR passage per page, in both spaces
    assert sorted(s for s in segs["scan.pdf"]) == sorted(
        (space, "text_passage", "ocr", page) for space in ("clip", "clap") for page in (1, 2, 3)
    )
    top = _search(SIGN).results[0]
    assert Path(top.path).name == "sign.png" and top.best.origin == "ocr"
    assert top.as_dict(explain=True)["explain"]["segment"] == "ocr"
    assert top.best.snippet == SIGN  # read again from the stored boxes
    hit = _search(PAGES[1]).results[0]
    assert Path(hit.path).name == "scan.pdf" and hit.best.page == 2 and hit.best.snippet == PAGES[1]
    # a type filter keeps OCR hits of images
    assert Path(_search(SIGN, types=["image"]).results[0].path).name == "sign.png"


def test_ocr_text_stays_out_of_the_catalogue_unless_store_snippets(collection: Path, tmp_path: Path) -> None:
    _index(collection, ocr="all")
    dump = catalogue_text(paths.index_dir())
    for words in (SIGN, RECEIPT[1], PAGES[1]):
        assert words not in dump
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        assert cat.conn.execute("SELECT COUNT(*) FROM ocr_lines WHERE text IS NOT NULL").fetchone()[0] == 0
        assert cat.conn.execute("SELECT COUNT(*) FROM ocr_lines").fetchone()[0] == 1 + 3 + 3
    stored = tmp_path / "stored-index"
    res = invoke("index", str(collection), "--ocr", "all", "--store-snippets", "--workers", "0", "--index", str(stored))
    assert res.exit_code == 0, res.stderr
    dump = catalogue_text(stored)
    assert SIGN in dump and RECEIPT[1] in dump and PAGES[1] in dump
    # the keyword index is fed with it too: a keyword-only search finds the receipt by a word
    found = _search("brass hinges", index_dir=stored, match="keyword").results
    assert [Path(r.path).name for r in found] == ["receipt.jpg"]
    assert found[0].best.snippet and "brass hinges" in found[0].best.snippet


def test_ocr_off_indexes_no_ocr_passages_and_is_kept(collection: Path) -> None:
    res = invoke("index", str(collection), "--ocr", "off", "--workers", "0")
    assert res.exit_code == 0, res.stderr
    assert "1 skipped" in res.stderr  # the scanned PDF: no text layer, and no OCR
    segs = _segments(paths.index_dir())
    assert all(origin is None for file_segs in segs.values() for _, _, origin, _ in file_segs)
    assert "scan.pdf" not in segs
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        assert cat.conn.execute("SELECT COUNT(*) FROM ocr").fetchone()[0] == 0
        assert cat.get_setting("ocr_mode") == "off"
    (collection / "sign2.png").write_bytes((collection / "sign.png").read_bytes() + b"\0")  # new content
    assert invoke("index", str(collection), "--workers", "0").exit_code == 0  # no --ocr: the recorded off
    assert all(o is None for _, _, o, _ in _segments(paths.index_dir())["sign2.png"])
    # OCR turned on: the PDF skipped for its missing text layer is read now
    assert invoke("index", str(collection), "--workers", "0", "--ocr", "auto").exit_code == 0
    assert {page for _, _, _, page in _segments(paths.index_dir())["scan.pdf"]} == {1, 2, 3}


def test_a_failing_ocr_leaves_the_image_indexed_with_the_reason(images: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*a: object, **k: object) -> None:
        raise RuntimeError("the recogniser fell over")

    monkeypatch.setattr(engine, "read", broken)
    report = _index(images, ocr="all")
    assert report.failed == 0
    assert _segments(paths.index_dir())["sign.png"] == [("clip", "image", None, None)]
    info = core.info(str(images / "sign.png"))
    assert info["status"] == "indexed"
    assert info["ocr"]["status"] == "failed" and "the recogniser fell over" in info["ocr"]["reason"]


def test_corrupt_image_and_pdf_give_one_line_errors_naming_them(images: Path) -> None:
    (images / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 40)
    (images / "torn.pdf").write_bytes(b"%PDF-1.4\n" + b"not really a pdf\n" * 20)
    res = invoke("index", str(images), "--ocr", "all", "--workers", "0", "--json")
    report = json.loads(res.stdout)
    errors = {Path(e["path"]).name: e["error"] for e in report["errors"]}
    assert set(errors) == {"torn.png", "torn.pdf"}
    assert all("\n" not in why and why for why in errors.values())
    assert report["embedded_files"] == 3  # the rest is indexed


def test_a_dense_texture_file_completes_within_the_cap(
    tmp_path: Path, fake_encoders: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "media"
    root.mkdir()
    dense_texture().save(root / "texture.png")
    monkeypatch.setenv("XMR_OCR_MAX_LINES", "20")
    report = _index(root, ocr="all")
    assert report.failed == 0 and report.embedded_files == 1
    ocr = core.info(str(root / "texture.png"))["ocr"]
    assert ocr["settings"]["max_lines"] == 20 and 0 < ocr["n_lines"] <= 20
    assert "text boxes found" in ocr["reason"]


@pytest.mark.parametrize("workers", [0, 1])
def test_a_scanned_pdf_reports_its_pages_and_reads_one_at_a_time(
    tmp_path: Path, fake_encoders: None, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    root = tmp_path / "media"
    root.mkdir()
    scanned_pdf(root / "scan.pdf", PAGES)
    for i in range(8):  # enough files that decoding goes to a worker process with workers=1
        (root / f"note{i}.bin").write_bytes(b"\x00\x01" * 50)
    progress = Details()
    report = index(
        [root],
        index_dir=paths.index_dir(),
        options=IndexOptions(workers=workers, checkpoint_ann=False, ocr="auto"),
        progress=progress,
    )
    assert report.embedded_files == 1
    assert [d for d in progress.details if d.startswith("scan.pdf")] == [f"scan.pdf: page {i} of 3" for i in (1, 2, 3)]


def test_pdf_pages_are_rendered_one_at_a_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from xmr.ocr import read
    from xmr.ocr.record import OcrConfig

    scanned_pdf(tmp_path / "scan.pdf", PAGES)
    live: list[int] = []
    alive = 0
    render = read.render_page

    class Tracked:
        def __init__(self, img: Any) -> None:
            nonlocal alive
            alive += 1
            live.append(alive)
            self.img = img

        def __del__(self) -> None:
            nonlocal alive
            alive -= 1

    def fake_read(image: Any, *, options: Any = None) -> Any:
        return real_read(image.img, options=options)

    real_read = engine.read
    monkeypatch.setattr(read, "render_page", lambda pdf, i: Tracked(render(pdf, i)))
    monkeypatch.setattr(engine, "read", fake_read)
    rec = read.read_pdf(tmp_path / "scan.pdf", OcrConfig("auto", SLOW_OK))
    assert rec.status == "text" and [p for p, _, _ in rec.pages or ()] == [1, 2, 3]
    assert max(live) == 1  # never two rendered pages in memory at once


def test_a_changed_file_shows_a_note_not_stale_text(images: Path) -> None:
    _index(images, ocr="all")
    sign = images / "sign.png"
    sign.write_bytes(sign.read_bytes() + b"\0")
    hit = _search(SIGN).results[0]
    assert Path(hit.path).name == "sign.png" and hit.best.snippet is None
    assert hit.best.snippet_note == "changed since indexing"


def test_ocr_setting_is_validated(images: Path) -> None:
    res = invoke("index", str(images), "--ocr", "sometimes")
    assert res.exit_code == 2 and "--ocr" in res.stderr and "auto, all, off" in res.stderr


# --- the default architectures (random weights) ------------------------------------------------------


@pytest.fixture(scope="module")
def real_env(real_models: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("ocr-real")
    return {**real_models, "media": str(make_collection(root / "media")), "index": str(root / "index")}


@pytest.fixture
def real_index(real_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    for key, value in real_env.items():
        if key.startswith("XMR_"):
            monkeypatch.setenv(key, value)
    media, index_dir = Path(real_env["media"]), Path(real_env["index"])
    if not (index_dir / "catalogue.db").exists():
        options = IndexOptions(workers=1, ocr="all")
        report = index([media], index_dir=index_dir, settings=Settings.from_env(), options=options)
        assert report.failed == 0 and report.embedded_files == 4
    return media, index_dir


@pytest.mark.slow
def test_real_models_a_phrase_finds_the_image_and_the_pdf_page(real_index: tuple[Path, Path]) -> None:
    media, index_dir = real_index
    top = _search(SIGN, index_dir=index_dir, match="semantic").results[0]
    assert Path(top.path).name == "sign.png" and top.best.snippet == SIGN
    assert top.as_dict(explain=True)["explain"]["segment"] == "ocr"
    page = _search(PAGES[2], index_dir=index_dir, match="semantic").results[0]
    assert Path(page.path).name == "scan.pdf" and page.best.page == 3 and page.best.snippet == PAGES[2]
    res = invoke("search", PAGES[2], "--index", str(index_dir), "--json", "--explain")
    assert res.exit_code == 0, res.stderr
    best = json.loads(res.stdout)["results"][0]
    assert best["page"] == 3 and best["explain"]["segment"] == "ocr" and best["snippet"] == PAGES[2]


@pytest.mark.slow
def test_real_models_info_shows_ocr_provenance_and_lines(real_index: tuple[Path, Path]) -> None:
    media, index_dir = real_index
    res = invoke("info", str(media / "receipt.jpg"), "--index", str(index_dir))
    assert res.exit_code == 0, res.stderr
    out = res.stdout
    assert "ocr: text; 3 line(s)" in out and "rapidocr 3.10" in out and "PP-OCRv6_rec_small" in out
    assert "read again from the file's line boxes" in out
    for line in RECEIPT:
        assert any(row.strip().endswith(line) and row.strip().startswith("[") for row in out.splitlines()), line
    assert "text_passage (ocr)" in out
    data = json.loads(invoke("info", str(media / "receipt.jpg"), "--index", str(index_dir), "--json").stdout)
    assert [ln["text"] for ln in data["ocr"]["lines"]] == RECEIPT
    assert all(0.5 <= ln["score"] <= 1 and len(ln["box"]) == 4 for ln in data["ocr"]["lines"])
    assert data["ocr"]["settings"]["mode"] == "all"


def test_images_indexed_without_ocr_are_read_once_ocr_is_on(images: Path) -> None:
    """An index made before OCR (or with --ocr off): the next run with OCR reads its images once,
    embedding the text found beside the picture; the run after that reads nothing."""
    assert invoke("index", str(images), "--ocr", "off", "--workers", "0").exit_code == 0
    assert all(o is None for segs in _segments(paths.index_dir()).values() for _, _, o, _ in segs)
    res = invoke("index", str(images), "--ocr", "all", "--workers", "0", "--json")
    report = json.loads(res.stdout)
    assert report["new"] == 0 and report["unchanged"] == 3 and report["failed"] == 0
    segs = _segments(paths.index_dir())
    assert ("clip", "image", None, None) in segs["sign.png"]
    assert ("clap", "text_passage", "ocr", None) in segs["sign.png"]
    assert Path(_search(SIGN).results[0].path).name == "sign.png"
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        assert len(cat.ocr_statuses()) == 3  # the meadow too: read, nothing found
    again = json.loads(invoke("index", str(images), "--workers", "0", "--json").stdout)
    assert again["files_read"] == 0 and again["unchanged"] == 3


def test_the_time_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from xmr.ocr.record import config_for

    monkeypatch.setenv("XMR_OCR_TIME_LIMIT", "75.5")
    assert config_for("auto").options.time_limit_s == 75.5
    for bad in ("0", "-3", "soon", ""):
        monkeypatch.setenv("XMR_OCR_TIME_LIMIT", bad)
        assert config_for("all").options.time_limit_s == OcrOptions().time_limit_s == 30.0
    assert config_for("off") is None


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import xmr.preprocess.image as image_mod

    calls: list[str] = []
    real = image_mod.load_image

    def counting(path: Any, **kw: Any) -> Any:
        calls.append(str(path))
        return real(path, **kw)

    monkeypatch.setattr(image_mod, "load_image", counting)
    return calls


def test_the_gate_reads_the_image_clip_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from xmr import media
    from xmr.ocr.record import GATED, config_for
    from xmr.preprocess.image import ImagePreprocessor

    pre = ImagePreprocessor(size=224, mean=0.5, std=0.5)
    rng = np.random.default_rng(3)
    photo = tmp_path / "photo.jpg"  # smooth, no text: the gate says no
    Image.fromarray((np.linspace(40, 200, 640)[None, :, None] + rng.normal(0, 2, (480, 640, 3))).clip(0, 255)
                    .astype(np.uint8)).save(photo, quality=90)
    calls = _count_decodes(monkeypatch)
    ctx = media.DecodeContext(image_preprocessor=pre, ocr=config_for("auto"))
    d = media.get("image").decode(str(photo), ctx)
    assert d.ocr.status == GATED and len(calls) == 1  # one decode for CLIP and the gate
    assert np.array_equal(d.pixels, pre(photo))  # and CLIP's pixels are those of a plain decode

    # the EXIF the gate reads comes with that decode: a screenshot tool's tag passes the gate,
    # and only then is the file decoded again, at OCR size
    shot = tmp_path / "shot.jpg"
    exif = Image.Exif()
    exif[0x0131] = "GNOME Screenshot 41.0"
    Image.open(photo).save(shot, exif=exif, quality=90)
    calls.clear()
    d = media.get("image").decode(str(shot), ctx)
    assert d.ocr.settings["gate"].startswith("exif:") and d.ocr.status != GATED, d.ocr
    assert len(calls) == 2
