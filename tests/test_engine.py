"""Indexing images through CLIP's exported image tower (xmr.encoders.engine), real architectures.

The ONNX path must record what the backend records (model id, preprocessing,
dimension) and give its vectors within 1e-5; it must not import torch for an
images-only folder; a first run exports the tower only once it has enough
images; at int8 an image's vector is the ONNX int8 tower's, the same whatever
else shares its batch and whichever path made it.
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
from xmr.encoders import engine, load_encoder, towers
from xmr.errors import UsageError
from xmr.indexer import IndexOptions, index
from xmr.settings import Settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "media" / "images"
pytestmark = pytest.mark.slow


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png", ".webp", ".gif"))


@pytest.fixture
def env(real_models: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The session's random-weight models with a models dir of this test's own (no tower yet)."""
    models = tmp_path / "models"
    values = {**real_models, "XMR_MODELS_DIR": str(models)}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in _images(FIXTURES):
        shutil.copy(p, photos / p.name)
    return {**values, "photos": str(photos), "index": str(tmp_path / "index")}


def _model_row(index_dir: str) -> dict:
    with Catalogue.open(Path(index_dir), readonly=True) as cat:
        row = cat.model_row(cat.active_model("clip") or "")
    assert row is not None
    return {k: row[k] for k in ("id", "name", "pretrained", "checkpoint_sha256", "dim", "preprocessing")}


def _export_image_tower(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    enc = engine.index_encoder("clip", settings)
    assert isinstance(enc, engine.ImageTowerEncoder) and enc.engine == "onnx+backend"  # no tower yet
    monkeypatch.setattr(engine, "EXPORT_MIN_IMAGES", 1)
    enc.embed_images(np.zeros((1, 3, 224, 224), np.float32))
    assert enc._images.ready("image", variant=False)


def test_an_images_only_run_uses_the_tower_without_torch_and_records_what_the_backend_does(env, monkeypatch) -> None:
    settings = Settings.from_env()
    _export_image_tower(settings, monkeypatch)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from xmr.indexer import IndexOptions, index\n"
        "from xmr.settings import Settings\n"
        f"report = index([{env['photos']!r}], index_dir=Path({env['index']!r}), settings=Settings.from_env(),"
        " options=IndexOptions(workers=0))\n"
        "assert report.embedded_files >= 5, report\n"
        "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    by_tower = _model_row(env["index"])
    # the same folder through the backend: same provenance
    torch_index = str(Path(env["index"]).with_name("index-torch"))
    opts = IndexOptions(workers=0)
    index([env["photos"]], index_dir=Path(torch_index), settings=Settings.from_env(index_engine="torch"), options=opts)
    assert _model_row(torch_index) == by_tower
    # and the same vectors
    full = load_encoder("clip", settings)
    tower = engine.index_encoder("clip", settings)
    assert tower.engine == "onnx"
    assert tower.image_preprocessor().describe() == full.image_preprocessor().describe()
    pixels = np.stack([full.image_preprocessor()(p) for p in _images(Path(env["photos"]))])
    diff = np.abs(tower.embed_images(pixels) - full.embed_images(pixels)).max()
    assert diff < 1e-5, diff
    assert tower.engine == "onnx"  # images never built the backend
    assert tower.embed_texts(["a dog"]).shape == (1, full.dim) and tower.engine == "onnx+backend"


def test_a_first_run_exports_the_image_tower_only_once_it_has_enough_images(env, monkeypatch) -> None:
    folder = towers.tower_dir
    settings = Settings.from_env()
    enc = engine.index_encoder("clip", settings)
    target = folder(enc.info.model_id, enc.info.checkpoint_sha256, "image")
    n = len(_images(Path(env["photos"])))
    monkeypatch.setattr(engine, "EXPORT_MIN_IMAGES", n + 1)
    index([env["photos"]], index_dir=Path(env["index"]), settings=settings, options=IndexOptions(workers=0))
    assert not target.exists()  # a small first run does not pay for the export
    monkeypatch.setattr(engine, "EXPORT_MIN_IMAGES", n)
    index([env["photos"]], index_dir=Path(env["index"] + "2"), settings=settings, options=IndexOptions(workers=0))
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["tower"] == "image" and manifest["model_id"] == enc.info.model_id
    assert _model_row(env["index"]) == _model_row(env["index"] + "2")


def test_int8_images_are_the_onnx_int8_tower_whatever_the_batch_and_path(env) -> None:
    fp32 = load_encoder("clip", Settings.from_env())
    low = load_encoder("clip", Settings.from_env(precision="int8"))  # exports, then quantises
    assert low.info.model_id == f"{fp32.info.model_id}@int8"
    pixels = np.stack([fp32.image_preprocessor()(p) for p in _images(Path(env["photos"]))])
    together = low.embed_images(pixels)
    alone = np.concatenate([low.embed_images(pixels[i : i + 1]) for i in range(len(pixels))])
    assert np.array_equal(together, alone)  # an image's int8 vector does not depend on its batch-mates
    manifest = json.loads((low._int8_images.folder("image") / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["int8_min_cosine"] >= 0.999
    cos = (together * fp32.embed_images(pixels)).sum(axis=1)
    assert cos.min() >= 0.999 and not np.allclose(cos, 1.0, atol=1e-7), cos
    # the indexing path without the backend gives the very same vectors
    tower = engine.index_encoder("clip", Settings.from_env(precision="int8"))
    assert tower.info.model_id == low.info.model_id and tower.engine == "onnx"
    assert np.array_equal(tower.embed_images(pixels), together)
    # text at int8 stays torch's int8 (the backend), not the fp32 ONNX text tower
    assert np.array_equal(tower.embed_texts(["a red boat"]), low.embed_texts(["a red boat"]))


def test_the_index_engine_setting(monkeypatch) -> None:
    monkeypatch.setenv("XMR_INDEX_ENGINE", "torch")
    assert not engine.uses_towers("clip", Settings.from_env(device="cpu"))
    assert engine.uses_towers("clip", Settings.from_env(device="cpu", index_engine="onnx"))
    assert engine.uses_towers("clap", Settings.from_env(device="cpu", index_engine="onnx"))
    assert not engine.uses_towers("clip", Settings.from_env(device="cpu", index_engine="onnx", precision="bf16"))
    assert not engine.uses_towers("clip", Settings.from_env(device="cuda", index_engine="onnx"))
    with pytest.raises(UsageError, match="XMR_INDEX_ENGINE"):
        engine.uses_towers("clip", Settings.from_env(index_engine="tensorrt"))


def test_an_image_query_on_an_int8_index_finds_itself_through_the_int8_tower_without_torch(env) -> None:
    opts = IndexOptions(workers=0)
    index([env["photos"]], index_dir=Path(env["index"]), settings=Settings.from_env(precision="int8"), options=opts)
    assert _model_row(env["index"])["id"].endswith("@int8")
    photo = str(_images(Path(env["photos"]))[2])
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from xmr.query import QueryPart\n"
        "from xmr.search import search\n"
        f"res = search([QueryPart('image', {photo!r})], index_dir=Path({env['index']!r})).as_dict()\n"
        "top = res['results'][0]\n"
        f"assert top['path'] == {photo!r} and abs(top['raw'] - 1.0) < 1e-5, top\n"
        "from xmr.indexer import IndexOptions, index\n"
        "from xmr.settings import Settings\n"
        f"report = index([{env['photos']!r}], index_dir=Path({env['index'] + '-again'!r}),"
        " settings=Settings.from_env(precision='int8'), options=IndexOptions(workers=0))\n"
        "assert report.embedded_files >= 5, report\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    child = {k: v for k, v in os.environ.items() if k != "XMR_DEVICE"}  # auto: no GPU here, so no torch
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env=child)


def test_a_damaged_image_tower_falls_back_to_the_backend_at_fp32(env, monkeypatch) -> None:
    settings = Settings.from_env()
    _export_image_tower(settings, monkeypatch)
    enc = engine.index_encoder("clip", settings)
    manifest = enc._images.folder("image", variant=False) / "manifest.json"
    good = manifest.read_text()
    manifest.write_text("{not json")
    damaged = engine.index_encoder("clip", settings)  # no traceback: the backend's preprocessing and id
    assert damaged.engine == "onnx+backend" and damaged.info == enc.info
    manifest.write_text(good)
    (enc._images.folder("image", variant=False) / "model.onnx").write_bytes(b"garbage")
    report = index([env["photos"]], index_dir=Path(env["index"]), settings=settings, options=IndexOptions(workers=0))
    assert report.embedded_files >= 5 and report.failed == 0


def test_int8_images_have_no_second_quantiser(env, monkeypatch) -> None:
    from xmr.encoders import tower_quant
    from xmr.errors import ModelError

    def refuse(src: Path, dst: Path) -> Path:
        raise towers.TowerUnsupported("the quantiser does not handle this graph")

    monkeypatch.setattr(tower_quant, "quantise", refuse)
    low = load_encoder("clip", Settings.from_env(precision="int8"), reuse=False)
    pixels = np.zeros((2, 3, 224, 224), np.float32)
    with pytest.raises(ModelError, match="int8 image tower.*quantiser does not handle"):
        low.embed_images(pixels)
    with pytest.raises(ModelError, match="int8 image tower"):
        engine.index_encoder("clip", Settings.from_env(precision="int8")).embed_images(pixels)
