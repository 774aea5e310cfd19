"""Indexing sound through CLAP's exported audio tower (xmr.encoders.engine), real architecture.

HTSAT-tiny with random weights, loaded from a checkpoint file as a user passes it
(``--clap-model``): the ONNX path must record what the backend records and give
its vectors within 1e-5 at fp32; at int8 a window's vector is the same tower's,
whatever shares its call and whichever path made it; a video
index run with the towers exported must not import torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xmr.catalogue import Catalogue
from xmr.encoders import engine, load_encoder
from xmr.indexer import IndexOptions, index
from xmr.preprocess.audio import load_audio, windows
from xmr.settings import Settings

AUDIO = Path(__file__).resolve().parent.parent / "fixtures" / "media" / "audio"
pytestmark = pytest.mark.slow


@pytest.fixture
def env(real_models: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The session's random-weight models with a models dir of this test's own (no tower yet)."""
    values = {**real_models, "XMR_MODELS_DIR": str(tmp_path / "models")}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def _windows() -> np.ndarray:
    # a 10 s window, a short clip (repeat-padded) and the windows of a 35 s file
    names = ["chord_c_major.wav", "high_voice.mp3", "long_35s.ogg"]
    wins = np.stack([w.samples for n in names for w in windows(load_audio(AUDIO / n))])
    assert len(wins) >= 5
    return wins


def _info(enc: object) -> tuple:
    i = enc.info  # type: ignore[attr-defined]
    return (i.model_id, i.space, i.name, i.pretrained, i.checkpoint_sha256, i.dim, i.preprocessing)


def test_the_audio_tower_gives_the_backends_vectors_and_identity(env, monkeypatch) -> None:
    wins = _windows()
    full = load_encoder("clap", Settings.from_env(), reuse=False)
    want = full.embed_audio(wins)
    first = engine.index_encoder("clap", Settings.from_env())
    assert isinstance(first, engine.AudioTowerEncoder) and first.engine == "onnx+backend"  # no tower yet
    monkeypatch.setattr(engine, "EXPORT_MIN_WINDOWS", 1)
    assert float(np.abs(first.embed_audio(wins) - want).max()) <= 1e-5  # exported now, then run
    # a later run: the tower alone, no backend, the same identity as the backend records
    later = engine.index_encoder("clap", Settings.from_env())
    assert isinstance(later, engine.AudioTowerEncoder) and later.engine == "onnx"
    assert _info(later) == _info(full)
    got = later.embed_audio(wins)
    assert later.engine == "onnx"
    assert float(np.abs(got - want).max()) <= 1e-5
    assert float(np.abs(got - want).max()) > 0  # it is ONNX Runtime's arithmetic, not torch's
    # a tower exported by an older xmr (no model_info): named by the next run, which builds the backend
    manifest = later._audio.folder("audio", variant=False) / "manifest.json"
    m = json.loads(manifest.read_text(encoding="utf-8"))
    del m["model_info"]
    manifest.write_text(json.dumps(m), encoding="utf-8")
    assert engine.index_encoder("clap", Settings.from_env()).engine == "onnx+backend"
    assert engine.index_encoder("clap", Settings.from_env()).engine == "onnx"


def test_a_small_first_run_keeps_the_backend_and_exports_nothing(env) -> None:
    enc = engine.index_encoder("clap", Settings.from_env())
    enc.embed_audio(_windows()[:2])
    assert not enc._audio.ready("audio", variant=False)


def test_int8_audio_is_the_onnx_audio_tower_whatever_the_batch_and_path(env) -> None:
    wins = _windows()
    fp32 = load_encoder("clap", Settings.from_env(), reuse=False)
    low = load_encoder("clap", Settings.from_env(precision="int8"), reuse=False)
    assert low.info.model_id == f"{fp32.info.model_id}@int8"
    together = low.embed_audio(wins)  # exports the tower
    alone = np.concatenate([low.embed_audio(wins[i : i + 1]) for i in range(len(wins))])
    assert np.array_equal(together, alone)  # a window's vector does not depend on its call-mates
    # the fp32 tower (ONNX Runtime's int8 of HTS-AT strays from fp32: image_int8's doc)
    assert float(np.abs(together - fp32.embed_audio(wins)).max()) <= 1e-5
    # the indexing path without the backend: the same vectors (its session pre-packs the weights:
    # another order of the same sums) under the same id
    tower = engine.index_encoder("clap", Settings.from_env(precision="int8"))
    assert _info(tower) == _info(low) and tower.engine == "onnx"
    assert float(np.abs(tower.embed_audio(wins) - together).max()) <= 1e-6
    # text at int8 stays torch's int8 (the backend)
    assert np.array_equal(tower.embed_texts(["a dog barking"]), low.embed_texts(["a dog barking"]))
    assert not np.array_equal(low.embed_texts(["a dog barking"]), fp32.embed_texts(["a dog barking"]))


def test_a_video_run_with_the_towers_exported_does_not_import_torch(env, tmp_path, monkeypatch) -> None:
    from video_helpers import Spec, make_video

    first, later = tmp_path / "first", tmp_path / "videos"
    first.mkdir()
    later.mkdir()
    shutil.copy(AUDIO / "chord_c_major.wav", first / "chord.wav")
    make_video(later / "clip.mp4", Spec(duration_s=24.0, tone=(10.0, 20.0)))
    # a first run makes the index (the bridge vocabulary is text: torch) with both towers exported
    monkeypatch.setattr(engine, "EXPORT_MIN_WINDOWS", 1)
    monkeypatch.setattr(engine, "EXPORT_MIN_IMAGES", 1)
    shutil.copy(Path(__file__).resolve().parent.parent / "fixtures" / "media" / "images" / "rgba.png", first)
    idx = tmp_path / "index"
    report = index([str(first)], index_dir=idx, settings=Settings.from_env(), options=IndexOptions(workers=0))
    assert report.failed == 0
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from xmr.indexer import IndexOptions, index\n"
        "from xmr.settings import Settings\n"
        f"report = index([{str(later)!r}], index_dir=Path({str(idx)!r}), settings=Settings.from_env(),"
        " options=IndexOptions(workers=1))\n"
        "assert report.embedded_files == 1 and report.failed == 0, report\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'laion_clap', '_xmr_laion_clap') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env=dict(os.environ))
    with Catalogue.open(idx, readonly=True) as cat:
        kinds = set(cat.conn.execute("SELECT space, kind FROM segments WHERE start_s > 0"))
    assert {("clip", "image"), ("clap", "audio_window")} <= kinds, kinds  # the video's frames and sound
