"""`xmr status --check` through the CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke
from test_indexer import make_audio, make_image, make_text

from xmr import paths
from xmr.errors import ExitCode

pytestmark = pytest.mark.usefixtures("fake_encoders")


@pytest.fixture
def indexed(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    make_image(root / "cat.png", 1)
    make_audio(root / "beep.wav", 2)
    make_text(root / "memo.txt", 3, words=20)
    assert invoke("index", str(root), "--quiet").exit_code == 0
    return root


def test_check_passes_on_a_sound_index(indexed: Path) -> None:
    r = invoke("status", "--check", "--json")
    assert r.exit_code == 0, r.stderr
    check = json.loads(r.stdout)["check"]
    assert check["ok"] and check["problems"] == [] and check["checked"]["integrity_check"] == "ok"
    assert check["checked"]["vectors"] > 3
    r = invoke("status", "--check")
    assert r.exit_code == 0 and "check: integrity ok" in r.stdout


def test_check_names_a_vector_that_is_not_unit_norm(indexed: Path) -> None:
    db = paths.catalogue_path(paths.index_dir())
    with sqlite3.connect(db) as conn:
        vid, dim = conn.execute("SELECT id, dim FROM vectors WHERE space = 'clap' LIMIT 1").fetchone()
        bad = np.full(dim, np.nan, dtype="<f4")
        conn.execute("UPDATE vectors SET vector = ? WHERE id = ?", (bad.tobytes(), vid))
    r = invoke("status", "--check")
    assert r.exit_code == ExitCode.DAMAGED == 11
    assert "1 vectors not finite or not unit-norm" in r.stderr and "clap" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # plain status does not check
    assert invoke("status").exit_code == 0
