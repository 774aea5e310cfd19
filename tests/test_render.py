"""The search results table's helpers (xmr.render): paths shown short and never broken inside a name."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.cells import cell_len
from rich.console import Console

from xmr.render import display_path, file_uri, model_short_name, results_table, shorten_middle


@pytest.mark.parametrize(
    ("path", "width", "expected"),
    [
        ("fixtures/media/images/animated.gif", 40, "fixtures/media/images/animated.gif"),  # fits: as is
        ("fixtures/media/images/animated.gif", 34, "fixtures/media/images/animated.gif"),  # exactly
        ("fixtures/media/images/animated.gif", 33, "fixtures/media/imag…/animated.gif"),
        ("fixtures/media/images/animated.gif", 24, "fixtures/m…/animated.gif"),
        ("fixtures/media/images/animated.gif", 14, "…/animated.gif"),  # no folder left, the name whole
        ("fixtures/media/images/animated.gif", 17, "…/animated.gif"),  # "fix…" would be a stub
        ("fixtures/media/images/animated.gif", 18, "fixt…/animated.gif"),
        ("~/recordings/a_very_long_recording_name.flac", 16, "a_ver…_name.flac"),  # the name's middle goes
        ("a_very_long_recording_name.flac", 16, "a_ver…_name.flac"),
        ("README", 4, "RE…E"),  # no extension
        ("x/archive.tar.gz", 6, "arc…gz"),
        ("abc/d.e", 1, "…"),
        ("abc/d.e", 0, ""),
        # wide characters: two cells each, never split
        ("アルバム/夏休みの海の写真.jpg", 16, "夏休み…写真.jpg"),
        ("アルバム/海.jpg", 12, "アル…/海.jpg"),
        ("アルバム/海.jpg", 11, "…/海.jpg"),
    ],
)
def test_shorten_middle(path: str, width: int, expected: str) -> None:
    got = shorten_middle(path, width)
    assert got == expected
    assert cell_len(got) <= max(width, 0)


def test_display_path_relative_to_the_current_folder_else_home() -> None:
    home = "/home/ann"
    assert display_path("/home/ann/pics/a.jpg", cwd="/home/ann", home=home) == "pics/a.jpg"
    assert display_path("/home/ann/pics/a.jpg", cwd="/home/ann/pics", home=home) == "a.jpg"
    assert display_path("/home/ann/pics2/a.jpg", cwd="/home/ann/pics", home=home) == "~/pics2/a.jpg"
    assert display_path("/home/ann/pics/a.jpg", cwd="/tmp", home=home) == "~/pics/a.jpg"
    assert display_path("/srv/media/a.jpg", cwd="/tmp", home=home) == "/srv/media/a.jpg"
    assert display_path("/home/annie/a.jpg", cwd="/tmp", home=home) == "/home/annie/a.jpg"
    assert display_path("/home/ann/a.jpg", cwd="", home=home) == "~/a.jpg"  # no current folder


def test_file_uri_quotes_names() -> None:
    assert file_uri("/m/a b#1.jpg") == "file:///m/a%20b%231.jpg"
    assert file_uri("/m/\udcff.jpg", raw_path=b"/m/\xff.jpg") == "file:///m/%FF.jpg"


@pytest.mark.parametrize(
    ("model_id", "short"),
    [
        ("clip:ViT-B-32:laion2b_s34b_b79k", "ViT-B-32"),
        ("clip:ViT-B-32:sha256:0123456789abcdef", "ViT-B-32"),
        ("clap:630k-audioset-best:HTSAT-tiny", "HTSAT-tiny"),
        ("clap:music_audioset_epoch_15_esc_90.14:HTSAT-base", "HTSAT-base"),
        ("clap:HTSAT-tiny:sha256:0123456789abcdef@bf16", "HTSAT-tiny@bf16"),
        ("clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "CLIP-ViT-B-32-laion2B-s34B-b79K"),
        ("fake-clip:v1", "fake-clip"),
    ],
)
def test_model_short_name(model_id: str, short: str) -> None:
    assert model_short_name(model_id) == short


def _response(paths: list[str]) -> SimpleNamespace:
    def hit(i: int) -> SimpleNamespace:
        return SimpleNamespace(
            space="clip", model_id="clip:ViT-B-32:sha256:0123456789abcdef", route="direct", raw=0.25 - i / 100,
            start_s=None, end_s=None, page=None, snippet=None, snippet_note=None,
        )

    results = [
        SimpleNamespace(path=p, raw_path=None, modality="image", score=0.9 - i / 10, best=hit(i), segments=[hit(i)])
        for i, p in enumerate(paths)
    ]
    return SimpleNamespace(results=results, notes=[])


@pytest.mark.parametrize("width", [80, 140])
def test_the_table_keeps_every_name_whole_on_one_line(width: int) -> None:
    paths = [
        "/data/photos/2024/summer holiday in the mountains with friends/IMG_20240712_153012.jpg",
        "/data/photos/a.jpg",
        "/data/sounds/field recordings/morning birds at the lake near the old mill.flac",
    ]
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=False, color_system=None)
    console.print(results_table(_response(paths), console, explain=True, all_segments=False, cwd="/data"))
    text = out.getvalue()
    assert all(cell_len(line) <= width for line in text.splitlines())
    for name in ("IMG_20240712_153012.jpg", "a.jpg"):
        assert any(name in line for line in text.splitlines()), text
    assert "photos/a.jpg" in text  # relative to the current folder
    assert "direct ViT-B-32 0.250" in text
    assert "file://" not in text  # not a terminal: no links


def test_a_narrow_table_shortens_names_in_the_middle_and_never_wraps_them() -> None:
    paths = ["/data/sounds/field recordings/morning birds at the lake near the old mill.flac"]
    out = io.StringIO()
    console = Console(file=out, width=60, force_terminal=False, color_system=None)
    console.print(results_table(_response(paths), console, explain=True, all_segments=False, cwd="/data"))
    lines = out.getvalue().splitlines()
    assert all(cell_len(line) <= 60 for line in lines)
    row = next(line for line in lines if "…" in line)
    assert row.split("│")[3].strip().endswith(".flac")  # one piece, its extension kept
    assert not any(line.split("│")[3].strip() for line in lines[lines.index(row) + 1 :] if "│" in line)


def test_links_only_to_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("XMR_HYPERLINKS", raising=False)
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True, color_system="standard")
    console.print(results_table(_response(["/data/a b.jpg"]), console, explain=False, all_segments=False, cwd="/"))
    assert "\x1b]8;" in out.getvalue() and "file:///data/a%20b.jpg" in out.getvalue()
    monkeypatch.setenv("XMR_HYPERLINKS", "0")
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True, color_system="standard")
    console.print(results_table(_response(["/data/a b.jpg"]), console, explain=False, all_segments=False, cwd="/"))
    assert "\x1b]8;" not in out.getvalue()
