"""The one Hugging Face cache resolver (xmr.encoders.hf_cache), shared by both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from xmr.encoders import hf_cache


def test_location_follows_the_environment_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hf_cache.hub_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_cache.hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hf_cache.hub_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "old"))
    assert hf_cache.hub_cache_dir() == tmp_path / "old"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "new"))
    assert hf_cache.hub_cache_dir() == tmp_path / "new"
    assert hf_cache.repo_folder("org/name") == tmp_path / "new" / "models--org--name"


def test_cached_file_reads_a_hub_layout_and_never_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = hf_cache.repo_folder("org/name")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("r1")
    (repo / "snapshots" / "r1").mkdir(parents=True)
    (repo / "snapshots" / "r1" / "w.bin").write_bytes(b"x")
    assert hf_cache.cached_file("org/name", "w.bin") == repo / "snapshots" / "r1" / "w.bin"
    assert hf_cache.cached_file("org/name", "absent.bin") is None
    assert hf_cache.cached_file("org/other", "w.bin") is None  # not cached: no download attempted


def test_both_backends_use_it() -> None:
    from xmr.encoders import clap, clip

    assert clip._hf_cached is clap._hf_cached is hf_cache.cached_file
    assert clip.hf_cache_dir is clap._hf_cache_dir is hf_cache.hub_cache_dir
