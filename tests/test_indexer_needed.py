"""`xmr index` builds only the encoders its files need (xmr.needed), and the catalogue stays right."""

from __future__ import annotations

from pathlib import Path

import fake_encoders
import pytest
from test_indexer import make_audio, make_image, make_text

from xmr import bridge, needed, paths
from xmr.catalogue import Catalogue
from xmr.encoders import release
from xmr.indexer import IndexOptions, IndexReport, index

pytestmark = pytest.mark.usefixtures("fake_encoders")


@pytest.fixture(autouse=True)
def _fresh_encoders() -> None:
    # encoders are kept for reuse within a process: forget them so each run's constructions show
    release()
    fake_encoders.BUILT.clear()


def _run(root: Path, **opts: object) -> tuple[IndexReport, list[str]]:
    release()
    fake_encoders.BUILT.clear()
    opts.setdefault("workers", 0)
    report = index([root], index_dir=paths.index_dir(), options=IndexOptions(**opts))
    return report, sorted(fake_encoders.BUILT)


def _cat() -> Catalogue:
    return Catalogue.open(paths.index_dir(), readonly=True)


def _vectors(space: str) -> list[tuple[int, bytes]]:
    with _cat() as cat:
        rows = cat.conn.execute(
            "SELECT v.id, v.vector FROM vectors v JOIN segments s ON s.id = v.segment_id"
            " WHERE s.space = ? ORDER BY v.id",
            (space,),
        )
        return [(i, bytes(v)) for i, v in rows]


def _folder(tmp_path: Path, *kinds: str) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    makers = {"png": make_image, "wav": make_audio, "txt": make_text}
    for i, kind in enumerate(kinds):
        makers[kind](root / f"f{i}.{kind}", i + 1)
    return root


@pytest.mark.parametrize(
    ("kinds", "built"),
    [
        (("png", "png"), ["clip"]),
        (("wav",), ["clap"]),
        (("txt",), ["clap", "clip"]),
        (("png", "wav", "txt"), ["clap", "clip"]),
    ],
)
def test_a_first_index_builds_only_the_encoders_its_files_need(
    tmp_path: Path, kinds: tuple[str, ...], built: list[str]
) -> None:
    report, loaded = _run(_folder(tmp_path, *kinds))
    assert loaded == built
    assert report.embedded_files == len(kinds) and report.failed == 0
    with _cat() as cat:
        for space in ("clip", "clap"):
            # a space not loaded gets no model: nothing was embedded in it
            assert (cat.active_model(space) is not None) == (space in built)


def test_an_audio_file_added_to_an_images_only_index_loads_clap_then(tmp_path: Path) -> None:
    root = _folder(tmp_path, "png", "png")
    _, loaded = _run(root, bridge_concepts=False)
    assert loaded == ["clip"]
    clip_before = _vectors("clip")
    make_audio(root / "new.wav", 7)
    report, loaded = _run(root, bridge_concepts=False)
    assert loaded == ["clap"]  # the images are unchanged: CLIP is not needed
    assert report.unchanged == 2 and report.embedded_files == 1
    assert _vectors("clip") == clip_before  # nothing already indexed is lost
    assert len(_vectors("clap")) == 1


def test_no_index_run_embeds_the_bridge_concepts(tmp_path: Path) -> None:
    root = _folder(tmp_path, "png")
    _run(root)
    make_audio(root / "new.wav", 7)
    texts_before = fake_encoders.CALLS["texts"]
    _, loaded = _run(root)
    # the run that gives the second space its first vectors loads only what its files need:
    # the concepts wait for the first bridged search (xmr.bridge)
    assert loaded == ["clap"]
    assert fake_encoders.CALLS["texts"] == texts_before  # an image and a sound: no text embedded at all
    with _cat() as cat:
        assert cat.conn.execute("SELECT COUNT(*) FROM concepts").fetchone()[0] == 0
        models = [cat.active_model("clip"), cat.active_model("clap")]
    concepts = bridge.load_concepts()
    assert all(not bridge.concepts_cache_file(_Info(m)).exists() for m in models)
    assert len(concepts) > 100


class _Info:
    def __init__(self, model_id: str | None) -> None:
        self.model_id, self.checkpoint_sha256 = model_id or "", None


def test_a_model_change_re_embeds_with_only_that_model_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder(tmp_path, "png", "wav", "txt")
    _run(root)
    clap_before = _vectors("clap")
    with _cat() as cat:
        clap_model = cat.active_model("clap")
    monkeypatch.setenv("XMR_CLIP_MODEL", "ViT-B-16:other-tag")
    report, loaded = _run(root)
    # the text file already has its CLAP vectors by the configured model: only CLIP is needed
    assert loaded == ["clip"]
    assert report.embedded_files == 2  # the image and the text file, in the clip space
    assert _vectors("clap") == clap_before
    with _cat() as cat:
        assert cat.active_model("clip") == "fake-clip:ViT-B-16:other-tag"
        assert cat.active_model("clap") == clap_model
        for row in cat.files_under(str(root)).values():
            spaces = {"png": {"clip"}, "wav": {"clap"}, "txt": {"clip", "clap"}}[row.path.rsplit(".", 1)[1]]
            models = {"clip": "fake-clip:ViT-B-16:other-tag", "clap": clap_model}
            assert cat.encoded_spaces(row.hash, models) == spaces, row.path


def test_a_space_not_loaded_keeps_its_model_even_when_another_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sounds, photos = tmp_path / "sounds", tmp_path / "photos"
    sounds.mkdir()
    photos.mkdir()
    make_audio(sounds / "a.wav", 1)
    make_image(photos / "p.png", 1)
    _run(sounds)
    _run(photos)
    with _cat() as cat:
        clap_model = cat.active_model("clap")
    monkeypatch.setenv("XMR_CLAP_MODEL", "other-clap.pt")
    make_image(photos / "q.png", 2)
    _, loaded = _run(photos)
    assert loaded == ["clip"]
    with _cat() as cat:
        # switching it here would leave the indexed audio without vectors by the active model
        assert cat.active_model("clap") == clap_model
    report, loaded = _run(sounds)
    assert loaded == ["clap"]
    assert report.embedded_files == 1  # the recording, by the new model
    with _cat() as cat:
        assert cat.active_model("clap") == "fake-clap:other-clap.pt"


def test_a_look_ahead_cut_short_loads_clip_and_leaves_clap_to_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(needed, "MAX_OPENED", 1)
    root = _folder(tmp_path, "png", "wav", "png")
    report, loaded = _run(root)
    assert loaded == ["clap", "clip"]
    assert report.embedded_files == 3 and report.failed == 0
    assert report.files_read == 3  # no file read twice


@pytest.mark.parametrize("workers", [0, 1])
def test_files_the_look_ahead_missed_still_get_their_encoders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    # as if every file changed between the look and the decoding: nothing is loaded up front
    monkeypatch.setattr(needed, "spaces_needed", lambda *a, **k: needed.Needs())
    root = _folder(tmp_path, *(["png"] * 7 + ["wav", "txt"]))  # 8 files to decode: a pool when workers=1
    report, loaded = _run(root, workers=workers)
    assert loaded == ["clap", "clip"]
    assert report.embedded_files == 9 and report.failed == 0, report.errors
    assert len(_vectors("clip")) >= 7 and len(_vectors("clap")) >= 2
    with _cat() as cat:
        assert {r.status for r in cat.files_under(str(root)).values()} == {"indexed"}
        assert cat.integrity_check() == "ok"


def test_a_pooled_images_only_run_builds_only_clip(tmp_path: Path) -> None:
    report, loaded = _run(_folder(tmp_path, *["png"] * 8), workers=1)
    assert loaded == ["clip"]
    assert report.embedded_files == 8
