"""Descriptive metadata: read in the decode step through the media kinds, stored by migration 6,
back-filled without re-embedding, shown by `xmr info`."""

from __future__ import annotations

import json
from pathlib import Path

import fake_encoders
import pytest
from cli_helpers import invoke
from meta_fixtures import photo, tagged_flac, text_pdf

from xmr import paths
from xmr.catalogue import Catalogue
from xmr.indexer import IndexOptions, index
from xmr.media.meta import audio_metadata, exif_datetime, html_title, image_metadata, pdf_metadata

pytestmark = pytest.mark.usefixtures("fake_encoders")


def test_exif_is_read_with_offset_camera_lens_gps(tmp_path: Path) -> None:
    p = photo(
        tmp_path / "a.jpg", 1, taken="2024:05:01 10:00:00", offset="+02:00", make="Canon", model="EOS R5",
        lens="RF 24-105mm", gps=(52.37, -4.895), orientation=6,
    )  # fmt: skip
    meta = image_metadata(str(p))
    assert meta["taken_at"] == "2024-05-01T08:00:00+00:00"  # 10:00 at +02:00 is 08:00 UTC
    assert meta["utc_offset"] == "+02:00"
    assert (meta["camera_make"], meta["camera_model"], meta["lens"]) == ("Canon", "EOS R5", "RF 24-105mm")
    assert meta["lat"] == pytest.approx(52.37, abs=1e-5) and meta["lon"] == pytest.approx(-4.895, abs=1e-5)
    assert meta["orientation"] == 6
    assert image_metadata(str(photo(tmp_path / "bare.jpg", 2))) == {}
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    assert image_metadata(str(tmp_path / "broken.jpg")) == {}


def test_exif_datetime_without_offset_and_negative_offsets() -> None:
    assert exif_datetime("2020:01:31 23:30:00", "-05:00") == ("2020-02-01T04:30:00+00:00", "-05:00")
    assert exif_datetime("2020:01:31 23:30:00", None) == ("2020-01-31T23:30:00+00:00", None)
    assert exif_datetime("0000:00:00 00:00:00", None) is None


def test_audio_pdf_and_html_metadata(tmp_path: Path) -> None:
    song = tagged_flac(tmp_path / "s.flac", title="Harbour Song", artist="The Gulls", album="Coast", date="2021-06-03")
    assert audio_metadata(str(song)) == {
        "title": "Harbour Song",
        "artist": "The Gulls",
        "album": "Coast",
        "taken_at": "2021-06-03T00:00:00+00:00",
    }
    meta = pdf_metadata(str(text_pdf(tmp_path / "d.pdf", "Totals", title="Quarterly ledger", author="Ann Smith")))
    assert meta == {"title": "Quarterly ledger", "author": "Ann Smith", "tags": "ledger, port"}
    page = tmp_path / "p.html"
    page.write_text("<html><head><title>Tide &amp; times\n table</title></head><body>x</body></html>")
    assert html_title(str(page)) == {"title": "Tide & times table"}


def _tree(root: Path) -> Path:
    photo(root / "trip" / "IMG_0001.jpg", 1, taken="2024:05:01 10:00:00", offset="+02:00", make="Canon",
          model="EOS R5", gps=(52.37, 4.895))  # fmt: skip
    photo(root / "trip" / "IMG_0002.jpg", 2, make="FUJIFILM", model="X100V")
    tagged_flac(root / "music" / "song.flac", title="Harbour Song", artist="The Gulls", album="Coast", date="2021")
    (root / "notes.txt").write_text("a plain note about bread and butter\n")
    return root


def _meta_count() -> int:
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        return cat.conn.execute("SELECT COUNT(*) FROM file_meta").fetchone()[0]


@pytest.mark.parametrize("workers", [0, 2])
def test_index_stores_metadata_and_info_shows_it(tmp_path: Path, workers: int) -> None:
    root = _tree(tmp_path / "m")
    for i in range(8 if workers else 0):  # enough images for the worker pool to start
        photo(root / "more" / f"x{i}.jpg", 100 + i)
    report = index([root], index_dir=paths.index_dir(), options=IndexOptions(workers=workers, checkpoint_ann=False))
    assert report.failed == 0
    res = invoke("info", str(root / "trip" / "IMG_0001.jpg"), "--json")
    assert res.exit_code == 0, res.stderr
    meta = json.loads(res.stdout)["metadata"]
    assert meta["taken_at"] == "2024-05-01T08:00:00+00:00" and meta["camera_model"] == "EOS R5"
    assert meta["lat"] == pytest.approx(52.37, abs=1e-5)
    song = json.loads(invoke("info", str(root / "music" / "song.flac"), "--json").stdout)["metadata"]
    assert song == {"title": "Harbour Song", "artist": "The Gulls", "album": "Coast"}  # a year alone is no date
    text = invoke("info", str(root / "trip" / "IMG_0001.jpg")).stdout
    assert "camera make: Canon" in text and "utc offset: +02:00" in text and "modified: " in text


def test_an_index_without_metadata_is_back_filled_without_re_embedding(tmp_path: Path) -> None:
    root = _tree(tmp_path / "m")
    opts = IndexOptions(workers=0, checkpoint_ann=False)
    index([root], index_dir=paths.index_dir(), options=opts)
    n = _meta_count()
    assert n == 4
    with Catalogue.open(paths.index_dir()) as cat:  # as an index written before migration 6 left it
        cat.conn.execute("DELETE FROM file_meta")
        cat.conn.execute("DELETE FROM keywords")
    before = dict(fake_encoders.CALLS)
    res = invoke("index", str(root), "--workers", "0")
    assert res.exit_code == 0 and "metadata read for 4 unchanged" in res.stderr
    assert fake_encoders.CALLS == before  # nothing embedded again
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        counts = cat.last_run("index")["counts"]
    assert counts["embedded_files"] == counts["segments"] == 0 and counts["metadata_only"] == counts["unchanged"] == 4
    assert _meta_count() == n
    meta = json.loads(invoke("info", str(root / "trip" / "IMG_0002.jpg"), "--json").stdout)["metadata"]
    assert meta == {"camera_make": "FUJIFILM", "camera_model": "X100V"}
    report = index([root], index_dir=paths.index_dir(), options=opts)
    assert report.unchanged == report.found == 4  # and once read, the next run leaves them alone


def test_deleted_files_take_their_metadata_and_keywords_along(tmp_path: Path) -> None:
    root = _tree(tmp_path / "m")
    opts = IndexOptions(workers=0, checkpoint_ann=False)
    index([root], index_dir=paths.index_dir(), options=opts)
    (root / "notes.txt").unlink()
    index([root], index_dir=paths.index_dir(), options=opts)
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        assert cat.conn.execute("SELECT COUNT(*) FROM file_meta").fetchone()[0] == 3
        assert cat.conn.execute("SELECT COUNT(*) FROM keywords").fetchone()[0] == 3
        assert cat.keyword_search("notes") == []
        assert [m[0] for m in cat.keyword_search("gulls")] == [str(root / "music" / "song.flac")]
