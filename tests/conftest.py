from __future__ import annotations

import os
import socket
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Subprocesses (CLI runs, spawn workers) get the same network guard through a
# sitecustomize module on PYTHONPATH.
_GUARD = textwrap.dedent(
    """
    import socket as _s
    _orig = _s.socket.connect
    def _guard(self, address, *a, **k):
        local = isinstance(address, tuple) and address[0] in ("127.0.0.1", "::1", "localhost")
        if self.family != getattr(_s, "AF_UNIX", None) and not local:
            raise OSError(f"network access blocked in tests: {address!r}")
        return _orig(self, address, *a, **k)
    _s.socket.connect = _guard
    _s.socket.connect_ex = _guard
    """
)


def _block_network() -> None:
    orig = socket.socket.connect

    def guard(self: socket.socket, address: object, *a: object, **k: object) -> object:
        # loopback stays open: the server tests talk to 127.0.0.1 only
        local = isinstance(address, tuple) and address[0] in ("127.0.0.1", "::1", "localhost")
        if self.family != getattr(socket, "AF_UNIX", None) and not local:
            raise OSError(f"network access blocked in tests: {address!r}")
        return orig(self, address, *a, **k)

    socket.socket.connect = guard  # type: ignore[method-assign]
    socket.socket.connect_ex = guard  # type: ignore[method-assign,assignment]


@pytest.fixture(scope="session", autouse=True)
def _no_network(tmp_path_factory: pytest.TempPathFactory) -> None:
    _block_network()
    site = tmp_path_factory.mktemp("guard")
    (site / "sitecustomize.py").write_text(_GUARD)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(site), str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own index, caches and offline mode.

    Every XMR_* variable of the developer's shell is cleared first, so none can
    leak into a test (a test that needs one sets it)."""
    for name in [n for n in os.environ if n.startswith("XMR_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XMR_HOME", str(tmp_path / "xmr-home"))
    monkeypatch.setenv("XMR_MODELS_DIR", str(tmp_path / "xmr-models"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.setenv("XMR_OFFLINE", "1")
    # OCR (seconds per image) only where a test asks for it (tests/test_ocr.py sets XMR_OCR)
    monkeypatch.setenv("XMR_OCR", "off")
    # and where they do, read for what is read, not against the clock of a loaded machine
    monkeypatch.setenv("XMR_OCR_TIME_LIMIT", "900")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def real_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The default architectures (ViT-B-32, HTSAT-tiny) with random weights, saved as checkpoint
    files, with a RoBERTa-layout tokenizer and one models dir for the whole session, so the
    per-tower query encoders are exported once. As environment variables."""
    import open_clip
    import torch
    from clap_helpers import build_roberta_tokenizer, make_checkpoint

    root = tmp_path_factory.mktemp("real-models")
    torch.manual_seed(0)
    clip_ckpt = root / "clip-vit-b-32.pt"
    torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), clip_ckpt)
    clap_ckpt = root / "clap-htsat-tiny.pt"
    make_checkpoint(clap_ckpt, seed=1)
    return {
        "XMR_CLIP_MODEL": f"ViT-B-32:{clip_ckpt}",
        "XMR_CLAP_MODEL": str(clap_ckpt),
        "XMR_CLAP_TOKENIZER": str(build_roberta_tokenizer(root / "roberta")),
        "XMR_MODELS_DIR": str(root / "xmr-models"),
        "XMR_DEVICE": "cpu",
    }


@pytest.fixture
def fake_encoders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route both spaces to the deterministic test encoders (also in subprocesses)."""
    monkeypatch.setenv("XMR_BACKEND_CLIP", "fake_encoders:FakeClip")
    monkeypatch.setenv("XMR_BACKEND_CLAP", "fake_encoders:FakeClap")


@pytest.fixture
def xmr_cmd() -> list[str]:
    return [sys.executable, "-m", "xmr"]
