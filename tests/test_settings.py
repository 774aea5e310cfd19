"""Settings from the environment: one rule for on/off variables; tests see no stray XMR_*."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import invoke

from xmr.settings import Settings, env_flag, offline_mode


@pytest.mark.parametrize(
    ("value", "on"),
    [("1", True), ("true", True), (" Yes ", True), ("ON", True), ("0", False), ("no", False), ("", False)],
)
def test_env_flag_is_the_one_rule(monkeypatch: pytest.MonkeyPatch, value: str, on: bool) -> None:
    for name in ("XMR_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XMR_OFFLINE", value)
    assert env_flag("XMR_OFFLINE") is on and offline_mode() is on and Settings.from_env().offline is on
    monkeypatch.setenv("XMR_DEBUG", value)  # the CLI's traceback switch follows the same rule
    res = invoke("info", "/nowhere")
    assert ("Traceback" in res.stderr) is on


def test_unset_flag_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XMR_CONCEPTS_ONLY", raising=False)
    assert env_flag("XMR_CONCEPTS_ONLY") is False


_PROBE = """
import os
def test_probe():
    leaked = sorted(n for n in os.environ if n.startswith("XMR_"))
    # what the fixture sets itself: a private index and models dir, offline, and OCR off (tests ask
    # for it) with a time limit no loaded machine reaches
    assert leaked == ["XMR_HOME", "XMR_MODELS_DIR", "XMR_OCR", "XMR_OCR_TIME_LIMIT", "XMR_OFFLINE"], leaked
"""


def test_the_fixture_clears_every_xmr_variable_of_the_shell(tmp_path: Path) -> None:
    # a separate pytest run with the suite's conftest and a shell full of XMR_* variables
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(_PROBE)
    env = dict(os.environ, XMR_DEVICE="cuda:7", XMR_BATCH_SIZE="3", XMR_SOMETHING_NEW="1", XMR_CONCEPTS="/x")
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert res.returncode == 0 and "1 passed" in res.stdout, res.stdout + res.stderr
