"""`xmr index` prepares the first search's query encoders (xmr.warmup) and leaves the bridge concepts
to the first bridged search, with the real architectures (random weights)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_indexer import make_audio, make_image, make_text

from xmr.encoders.query import NOT_PREPARED

pytestmark = pytest.mark.slow


def _xmr(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xmr", *args], env=env, capture_output=True, text=True, timeout=900)


def _tower_manifests(models: Path) -> set[tuple[str, str]]:
    """(model folder's space prefix, tower) of every finished tower under the models dir."""
    found = set()
    for manifest in (models / "towers").glob("*/*/manifest.json"):
        found.add((manifest.parent.parent.name.split("_", 1)[0], manifest.parent.name))
    return found


def test_index_prepares_the_query_towers_and_no_bridge_concepts(
    real_models: dict[str, str], tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    make_image(media / "photo.png", 1)
    make_audio(media / "sound.wav", 2)
    make_text(media / "note.txt", 3)
    models = tmp_path / "models"  # its own: the session's shared models dir may hold towers already
    env = {**os.environ, **real_models, "XMR_MODELS_DIR": str(models), "XMR_HOME": str(tmp_path / "index")}
    env.pop("XMR_BACKEND_CLIP", None)
    env.pop("XMR_BACKEND_CLAP", None)

    indexed = _xmr(env, "index", str(media), "--workers", "0")
    assert indexed.returncode == 0, indexed.stderr
    # the text towers a first search needs; the image and audio towers wait for their first query
    assert _tower_manifests(models) == {("clip", "text"), ("clap", "text")}
    # an image, a sound and a note: nothing bridged yet, so no concept was embedded
    con = sqlite3.connect(tmp_path / "index" / "catalogue.db")
    try:
        assert con.execute("SELECT COUNT(*) FROM concepts").fetchone()[0] == 0
    finally:
        con.close()
    assert not list(models.rglob("concepts.npz"))

    first = _xmr(env, "search", "dog barking", "--json")
    assert first.returncode == 0, first.stderr
    assert "preparing" not in first.stderr.lower() and NOT_PREPARED not in first.stderr
    assert '"results"' in first.stdout

    # towers gone (an index made by an older xmr): the search says so in one line, and answers
    shutil.rmtree(models / "towers")
    again = _xmr(env, "search", "church bells", "--json")  # not in the query cache: embedded anew
    assert again.returncode == 0, again.stderr
    notices = [line for line in again.stderr.splitlines() if line.strip()]
    assert notices == [f"xmr: {NOT_PREPARED}"]
    assert '"results"' in again.stdout
    assert {("clip", "text"), ("clap", "text")} <= _tower_manifests(models)


def test_a_bridged_search_embeds_the_concepts_once_per_model(real_models: dict[str, str], tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    make_image(media / "photo.png", 1)
    concepts = tmp_path / "concepts.txt"
    concepts.write_text("dog barking\nchurch bells\nwaves\n")
    env = {
        **os.environ,
        **real_models,
        "XMR_MODELS_DIR": str(tmp_path / "models"),
        "XMR_HOME": str(tmp_path / "index"),
        "XMR_CONCEPTS": str(concepts),
        "XMR_CONCEPTS_ONLY": "1",
    }
    assert _xmr(env, "index", str(media), "--workers", "0").returncode == 0
    query = tmp_path / "q.wav"
    make_audio(query, 5)
    first = _xmr(env, "search", "--audio", str(query), "--json")
    assert first.returncode == 0, first.stderr
    assert sum("bridge concepts" in line for line in first.stderr.splitlines()) == 2  # clap (source), clip (target)
    assert len(list((tmp_path / "models").rglob("concepts.npz"))) == 2
    second = _xmr(env, "search", "--audio", str(query), "--json")
    assert second.returncode == 0 and "bridge concepts" not in second.stderr
