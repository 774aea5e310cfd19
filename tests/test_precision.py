"""Precision choice (xmr.encoders.precision) and length-sorted text batches (xmr.encoders.textbatch),
through the library with the deterministic test encoders; the real backends' fidelity at each
precision and with dynamic lengths is checked in test_encoder_clip.py / test_encoder_clap.py."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_indexer import make_audio, make_image, make_text

from xmr import paths
from xmr.bridge import load_concepts
from xmr.catalogue import Catalogue
from xmr.encoders import precision
from xmr.encoders.textbatch import length_batches
from xmr.errors import UsageError
from xmr.indexer import IndexOptions, index
from xmr.query import QueryPart
from xmr.search import SearchOptions, search
from xmr.settings import Settings

# ------------------------------------------------------------------------------ names and ids


def test_precision_names_and_model_ids() -> None:
    assert precision.check(None) is None and precision.check(" INT8 ") == "int8"
    with pytest.raises(UsageError, match="unknown precision 'fp8'"):
        precision.check("fp8")
    assert precision.tag_model_id("clip:ViT-B-32:tag", "fp32") == "clip:ViT-B-32:tag"
    assert precision.tag_model_id("clip:ViT-B-32:tag", "fp16") == "clip:ViT-B-32:tag"  # CUDA keeps today's ids
    tagged = precision.tag_model_id("clip:ViT-B-32:tag", "int8")
    assert tagged == "clip:ViT-B-32:tag@int8"
    assert precision.of_model_id(tagged) == "int8" and precision.base_model_id(tagged) == "clip:ViT-B-32:tag"
    assert precision.of_model_id("clip:ViT-B-32:tag") == "fp32" and precision.of_model_id(None) == "fp32"
    assert precision.base_model_id("clap:x@y") == "clap:x@y"  # an @ that is no precision stays
    assert precision.on_device("int8", "cpu") == "int8"
    assert precision.on_device("int8", "cuda") == "fp16" and precision.on_device("bf16", "mps") == "fp32"
    assert precision.expected_tag("bf16", "cpu") == "bf16"
    assert precision.expected_tag("int8", "cuda:0") == "fp32"  # fp16 on CUDA records untagged ids
    assert precision.expected_tag(None, "auto") == "fp32"


def test_settings_read_and_check_xmr_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMR_PRECISION", "BF16")
    assert Settings.from_env().precision == "bf16"
    assert Settings.from_env(precision="int8").precision == "int8"  # the option wins
    monkeypatch.setenv("XMR_PRECISION", "half")
    with pytest.raises(UsageError, match="unknown precision 'half'"):
        Settings.from_env()


def test_cli_rejects_an_unknown_precision_in_one_line(tmp_path: Path, xmr_cmd: list[str]) -> None:
    proc = subprocess.run(
        [*xmr_cmd, "index", str(tmp_path), "--precision", "fp64"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert "unknown precision 'fp64'" in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2


# ------------------------------------------------------------------------------ length batches


@pytest.mark.parametrize("seed", range(5))
def test_length_batches_cover_every_text_once_in_similar_lengths(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 78, size=int(rng.integers(1, 400))).tolist()
    if seed == 0:
        lengths = [3] * 200 + [77] * 5  # many short, a few long
    batches = list(length_batches(lengths, 32, 77))
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for b in batches:
        widths = [lengths[i] for i in b]
        assert len(b) * max(widths) <= 32 * 77  # never more tokens than a full padded batch
        assert len(b) <= 32 * 4
        assert max(widths) <= 2 * min(widths) + 8  # a long text does not pad many short ones
    if seed == 0:
        assert len(batches[0]) > 32  # short texts share bigger batches
        assert max(lengths[i] for i in batches[0]) == 3


# ------------------------------------------------------------------------------ indexing and search

pytestmark_fake = pytest.mark.usefixtures("fake_encoders")


def _index(root: Path, prec: str | None = None):
    settings = Settings.from_env(device="cpu", precision=prec)
    return index([root], index_dir=paths.index_dir(), settings=settings, options=IndexOptions(workers=0))


def _model_ids() -> set[str]:
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        return {m for (m,) in cat.conn.execute("SELECT DISTINCT model_id FROM vectors")}


@pytestmark_fake
def test_reindexing_at_another_precision_re_embeds(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    make_image(root / "a.png", 1)
    make_audio(root / "b.wav", 1)
    make_text(root / "c.txt", 1)
    assert _index(root).embedded_files == 3
    assert _model_ids() == {"fake-clip:v1", "fake-clap:v1"}
    assert _index(root).unchanged == 3  # same precision: nothing to do
    report = _index(root, "int8")
    assert report.embedded_files == 3 and report.unchanged == 0
    assert _model_ids() == {"fake-clip:v1@int8", "fake-clap:v1@int8"}  # the old vectors went
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        assert cat.active_model("clip") == "fake-clip:v1@int8"
    assert _index(root, "int8").unchanged == 3


@pytestmark_fake
def test_explain_says_when_the_query_ran_at_another_precision(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    make_text(root / "c.txt", 1)
    _index(root, "int8")
    same = search([QueryPart("text", "river")], index_dir=paths.index_dir(), settings=Settings.from_env(device="cpu"))
    assert same.notes == []  # the query used the index's own precision
    assert same.as_dict(explain=True)["notes"] == []
    other = search(
        [QueryPart("text", "river")],
        index_dir=paths.index_dir(),
        settings=Settings.from_env(device="cpu", precision="fp32"),
        options=SearchOptions(k=1),
    )
    assert other.results
    assert any("built at int8" in n and "embedded at fp32" in n for n in other.notes), other.notes
    assert other.as_dict(explain=True)["notes"] == other.notes
    assert other.as_dict()["notes"] is None
    # the query cache keys vectors by the precision they were embedded at: the fp32 query
    # does not reuse the int8 vector, and a repeat served from the cache keeps the note
    cache = sqlite3.connect(paths.index_dir() / "cache" / "queries.db")
    assert {r[0].rsplit("@", 1)[-1] for r in cache.execute("SELECT model_id FROM embeddings")} >= {"int8"}
    assert any("@" not in r[0] for r in cache.execute("SELECT model_id FROM embeddings"))
    again = search(
        [QueryPart("text", "river")],
        index_dir=paths.index_dir(),
        settings=Settings.from_env(device="cpu", precision="fp32"),
        options=SearchOptions(k=1),
    )
    assert again.notes == other.notes and again.embed_s == 0
    settings = Settings.from_env(device="cpu")
    assert search([QueryPart("text", "river")], index_dir=paths.index_dir(), settings=settings).notes == []


@pytestmark_fake
def test_bridge_concepts_wait_until_a_bridge_is_needed(tmp_path: Path) -> None:
    import fake_encoders

    photos = tmp_path / "photos"
    photos.mkdir()
    make_image(photos / "a.png", 1)
    _index(photos)
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        assert cat.conn.execute("SELECT COUNT(*) FROM concepts").fetchone()[0] == 0  # no first-run tax
    sound = tmp_path / "q.wav"
    make_audio(sound, 3)
    n_concepts = len(load_concepts())
    before = fake_encoders.CALLS["texts"]
    told: list[str] = []
    res = search([QueryPart("audio", str(sound))], index_dir=paths.index_dir(), notify=told.append)
    assert res.results and res.results[0].best.route == "bridge"
    assert fake_encoders.CALLS["texts"] - before == 2 * n_concepts  # both spaces' concepts, once
    assert sum("bridge concepts" in m for m in told) == 2
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        assert cat.conn.execute("SELECT COUNT(*) FROM concepts").fetchone()[0] == 0  # a search never writes it
    # they are kept per model in the models dir: the next bridged search embeds none
    before = fake_encoders.CALLS["texts"]
    told.clear()
    again = search([QueryPart("audio", str(sound))], index_dir=paths.index_dir(), notify=told.append)
    assert fake_encoders.CALLS["texts"] == before and not told
    assert [r.path for r in again.results] == [r.path for r in res.results]


@pytestmark_fake
def test_indexing_embeds_the_concepts_only_when_asked(tmp_path: Path) -> None:
    photos, sounds = tmp_path / "photos", tmp_path / "sounds"
    photos.mkdir()
    sounds.mkdir()
    make_image(photos / "a.png", 1)
    make_audio(sounds / "b.wav", 2)
    n_clip = len(load_concepts())
    settings = Settings.from_env(device="cpu", precision="bf16")
    index([photos, sounds], index_dir=paths.index_dir(), settings=settings, options=IndexOptions(workers=0))
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        assert cat.conn.execute("SELECT COUNT(*) FROM concepts").fetchone()[0] == 0
    options = IndexOptions(workers=0, bridge_concepts=True)
    make_image(photos / "c.png", 3)
    index([photos, sounds], index_dir=paths.index_dir(), settings=settings, options=options)
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        assert len(cat.concept_vectors("fake-clap:v1@bf16")) == n_clip
        assert len(cat.concept_vectors("fake-clip:v1@bf16")) == n_clip


def test_no_torch_for_the_default_precision() -> None:
    code = (
        "import sys\n"
        "from xmr.encoders import precision\n"
        "from xmr.settings import Settings\n"
        "assert precision.expected_tag(Settings.from_env().precision, 'auto') == 'fp32'\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
