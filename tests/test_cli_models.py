"""Missing model weights: one clear line, a distinct exit code, quickly; `xmr models`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import invoke
from test_indexer import make_image, make_text

from xmr.errors import ExitCode

# Run `xmr ARGS` in a fresh interpreter that reports, at exit, which heavy modules it
# imported and every network connection it tried (each one refused).
_REPORTING = """
import json, socket, sys
tried = []
def refuse(self, address, *a, **k):
    if self.family != getattr(socket, "AF_UNIX", None):
        tried.append(repr(address))
    raise OSError("refused by the test")
def refuse_lookup(host, *a, **k):
    tried.append(f"lookup {host}")
    raise socket.gaierror("refused by the test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.getaddrinfo = refuse_lookup
from xmr.cli import main
code = 0
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
heavy = [m for m in ("torch", "open_clip", "laion_clap", "transformers", "onnxruntime") if m in sys.modules]
with open(sys.argv[1], "w") as f:
    json.dump({"heavy": heavy, "connections": tried}, f)
sys.exit(code)
"""


def _run(
    args: list[str], report: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, list[str]]]:
    cmd = [sys.executable, "-c", _REPORTING, str(report), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    return res, json.loads(report.read_text())


@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    root = tmp_path / "small"
    root.mkdir()
    make_image(root / "a.png", 1)
    make_text(root / "b.txt", 2, words=10)
    return root


def test_index_without_weights_fails_fast_with_one_line(small_tree: Path, tmp_path: Path) -> None:
    res, report = _run(["index", str(small_tree)], tmp_path / "report.json")
    assert res.returncode == ExitCode.MODEL_MISSING, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xmr: error: ")
    # both models are missing: both are named in the one message
    assert "ViT-B-32" in lines[0] and "630k-audioset-best.pt" in lines[0]
    assert "xmr models download" in lines[0] and "XMR_CLIP_MODEL" in lines[0]
    # fast because the lookup is file checks only: no model library imported, no network tried
    assert report == {"heavy": [], "connections": []}


def test_search_without_weights_fails_fast(small_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an index made with the test encoders records the default model specs ...
    monkeypatch.setenv("XMR_BACKEND_CLIP", "fake_encoders:FakeClip")
    monkeypatch.setenv("XMR_BACKEND_CLAP", "fake_encoders:FakeClap")
    assert invoke("index", str(small_tree), "--quiet", "--workers", "0").exit_code == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("XMR_BACKEND_")}
    # ... which the real backends then cannot find
    res, report = _run(["search", "a cat"], tmp_path / "report.json", env)
    assert res.returncode == ExitCode.MODEL_MISSING, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "xmr models download" in res.stderr
    assert report == {"heavy": [], "connections": []}


def test_only_the_needed_model_is_asked_for(small_tree: Path, tmp_path: Path) -> None:
    res, _ = _run(["index", str(small_tree), "--modalities", "image"], tmp_path / "report.json")
    assert res.returncode == ExitCode.MODEL_MISSING
    assert "ViT-B-32" in res.stderr and "630k-audioset-best" not in res.stderr


def test_models_lists_missing_weights_without_torch() -> None:
    code = (
        "import sys\nfrom xmr.cli import main\n"
        "try:\n    main(['models', '--json'])\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('HEAVY=' + ','.join(m for m in ('torch', 'open_clip', 'laion_clap') if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    rows = json.loads(res.stdout)
    assert {r["space"]: r["present"] for r in rows} == {"clip": False, "clap": False}
    assert all(r["location"] for r in rows)
    assert "HEAVY=" in res.stderr and res.stderr.strip().endswith("HEAVY=")


def test_models_download_offline_is_a_clear_error() -> None:
    res = invoke("models", "download", "--space", "clip")
    assert res.exit_code == ExitCode.MODEL_MISSING
    assert res.stderr.startswith("xmr: error: ") and "Traceback" not in res.stderr
