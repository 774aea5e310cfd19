"""xmr.spaces: the one list of embedding spaces, and everything that walks "every space" uses it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

import xmr
from xmr import spaces
from xmr.encoders import BACKENDS, _cache_key
from xmr.settings import Settings

DATA = Path(xmr.__file__).parent / "data"


def test_the_spaces_are_clip_then_clap() -> None:
    assert spaces.SPACES == ("clip", "clap")
    assert set(spaces.INFO) == set(spaces.SPACES)


def test_the_registry_has_a_backend_for_each_space_and_no_other() -> None:
    assert list(BACKENDS) == list(spaces.SPACES)
    assert BACKENDS["clip"] == "xmr.encoders.clip:ClipEncoder"
    assert BACKENDS["clap"] == "xmr.encoders.clap:ClapEncoder"


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ("search.schema.json", ["$defs", "result", "properties", "space", "enum"]),
        ("eval.schema.json", ["properties", "models", "items", "properties", "space", "enum"]),
    ],
)
def test_the_json_schemas_name_the_same_spaces(schema: str, path: list[str]) -> None:
    node = json.loads((DATA / schema).read_text(encoding="utf-8"))
    for key in path:
        node = node[key]
    assert node == list(spaces.SPACES)


def test_settings_read_each_space_from_its_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XMR_CLIP_MODEL", "ViT-B-16:openai")
    monkeypatch.setenv("XMR_CLAP_MODEL", str(tmp_path / "c.pt"))
    monkeypatch.setenv("XMR_BACKEND_CLAP", "mymod:Factory")
    monkeypatch.delenv("XMR_BACKEND_CLIP", raising=False)
    s = Settings.from_env()
    assert spaces.model_spec(s, "clip") == "ViT-B-16:openai"
    assert spaces.model_spec(s, "clap") == str(tmp_path / "c.pt")
    assert s.backends == {"clap": "mymod:Factory"}


def test_defaults_and_names_of_each_space(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("XMR_CLIP_MODEL", "XMR_CLAP_MODEL"):
        monkeypatch.delenv(name, raising=False)
    s = Settings.from_env()
    assert (s.clip_model, s.clap_model) == ("ViT-B-32:laion2b_s34b_b79k", "630k-audioset-best.pt")
    assert (spaces.CLIP.model_setting, spaces.CLAP.model_env, spaces.CLIP.backend_env) == (
        "clip_model",
        "XMR_CLAP_MODEL",
        "XMR_BACKEND_CLIP",
    )
    assert spaces.model_spec(s, "video") == ""


def test_the_encoder_cache_key_follows_the_spaces_model() -> None:
    s = Settings()
    other = replace(s, clap_model="other.pt")
    assert _cache_key("clip", s) == _cache_key("clip", other)
    assert _cache_key("clap", s) != _cache_key("clap", other)
