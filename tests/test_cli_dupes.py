"""`xmr dupes`: a burst of one scene (resized, recompressed, cropped) among distinct pictures is
one group; an audio re-encode pairs with its original. Thumbnail encoders (fake_encoders.ThumbClip
/ ThumbClap): near-identical inputs get near vectors, as with real models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from cli_helpers import invoke
from meta_fixtures import photo
from PIL import Image

from xmr.dupes import dhash, hamming


@pytest.fixture
def thumb_encoders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMR_BACKEND_CLIP", "fake_encoders:ThumbClip")
    monkeypatch.setenv("XMR_BACKEND_CLAP", "fake_encoders:ThumbClap")


def burst(folder: Path, seed: int = 99) -> list[Path]:
    """One scene and its copies: resized to 75 %, recompressed at JPEG quality 70, cropped by 2 %."""
    base = photo(folder / "scene.jpg", seed, size=200)
    img = Image.open(base).convert("RGB")
    w, h = img.size
    out = [base, folder / "scene_small.png", folder / "scene_q70.jpg", folder / "scene_crop.jpg"]
    img.resize((w * 3 // 4, h * 3 // 4), Image.LANCZOS).save(out[1])
    img.save(out[2], quality=70)
    dx, dy = round(w * 0.02), round(h * 0.02)
    img.crop((dx, dy, w - dx, h - dy)).save(out[3], quality=92)
    return out


def _tone(path: Path, seed: int, fmt: str) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(3 * 16000) / 16000
    freqs = rng.uniform(200, 2000, 3)
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs) * 0.2 + rng.standard_normal(len(t)) * 0.01
    sf.write(path, x.astype(np.float32), 16000, format=fmt)
    return path


@pytest.fixture
def collection(tmp_path: Path, thumb_encoders: None) -> tuple[Path, list[Path], list[Path]]:
    root = tmp_path / "pics"
    for i in range(12):
        photo(root / "other" / f"p{i:02d}.jpg", i, size=160)
    shots = burst(root / "burst")
    (root / "sound").mkdir()
    song = [_tone(root / "sound" / "song.wav", 1, "WAV")]
    song.append(sf_reencode(song[0], root / "sound" / "song.ogg"))
    for i in range(3):
        _tone(root / "sound" / f"other{i}.wav", 10 + i, "WAV")
    res = invoke("index", str(root), "--quiet", "--workers", "0")
    assert res.exit_code == 0, res.stderr
    return root, shots, song


def sf_reencode(src: Path, dst: Path) -> Path:
    data, rate = sf.read(src, dtype="float32")
    sf.write(dst, data, rate, format="OGG", subtype="VORBIS")  # lossy: other samples
    return dst


def test_dhash_tolerates_the_burst_but_not_other_pictures(tmp_path: Path) -> None:
    shots = burst(tmp_path)
    h0 = dhash(str(shots[0]))
    assert all(hamming(h0, dhash(str(p))) <= 12 for p in shots[1:])
    others = [dhash(str(photo(tmp_path / f"o{i}.jpg", i, size=160))) for i in range(6)]
    assert min(hamming(h0, o) for o in others) > 12


def test_the_burst_is_one_group_and_nothing_else(collection: tuple[Path, list[Path], list[Path]]) -> None:
    _, shots, _ = collection
    res = invoke("dupes", "--type", "image", "--json")
    assert res.exit_code == 0, res.stderr
    groups = json.loads(res.stdout)["groups"]
    assert len(groups) == 1
    assert sorted(f["path"] for f in groups[0]["files"]) == sorted(str(p) for p in shots)
    assert all(f["similarity"] >= 0.9 for f in groups[0]["files"])


def test_audio_re_encodes_pair_up(collection: tuple[Path, list[Path], list[Path]]) -> None:
    _, _, song = collection
    groups = json.loads(invoke("dupes", "--type", "audio", "--json").stdout)["groups"]
    assert [sorted(f["path"] for f in g["files"]) for g in groups] == [sorted(str(p) for p in song)]


def test_table_output_and_a_stricter_threshold(collection: tuple[Path, list[Path], list[Path]]) -> None:
    res = invoke("dupes")
    assert res.exit_code == 0
    assert "scene_q70.jpg" in res.stdout and "song.ogg" in res.stdout and "nothing was deleted" in res.stderr
    # a threshold no re-encode reaches: nothing
    assert json.loads(invoke("dupes", "--threshold", "0.99999", "--json").stdout)["groups"] == []
    assert invoke("dupes", "--type", "video").exit_code == 2


def test_the_server_lists_the_same_groups(collection: tuple[Path, list[Path], list[Path]]) -> None:
    from server_helpers import running_server

    from xmr import paths

    _, shots, _ = collection
    with running_server(paths.index_dir()) as server:
        doc = server.request("GET", "/api/dupes?type=image").json()
        assert [sorted(f["path"] for f in g["files"]) for g in doc["groups"]] == [sorted(str(p) for p in shots)]
        assert all(f["file_id"] and f["urls"]["original"] for f in doc["groups"][0]["files"])
        assert server.request("GET", "/api/dupes?threshold=x").status == 400
        assert server.request("GET", "/api/dupes", token=False).status == 401
        page = server.request("GET", "/static/app.js", token=False).body.decode()
        assert "/api/dupes" in page
