"""`xmr index`, `status`, `errors`, `info`, `remove` through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import invoke
from test_indexer import make_audio, make_image, make_text

from xmr.errors import ExitCode

pytestmark = pytest.mark.usefixtures("fake_encoders")


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    make_image(root / "cat.png", 1)
    make_audio(root / "beep.wav", 2)
    make_text(root / "memo.txt", 3, words=20)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 10)
    return root


def test_index_then_status_json(media: Path) -> None:
    res = invoke("index", str(media), "--workers", "0")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == ""  # results only on stdout; the summary is on stderr
    assert "3 indexed" in res.stderr and "1 failed" in res.stderr
    status = json.loads(invoke("status", "--json").stdout)
    assert status["exists"] is True
    assert status["files"] == 4
    assert status["files_by_modality"] == {"audio": 1, "image": 2, "text": 1}
    spaces = {s["space"]: s for s in status["spaces"]}
    assert spaces["clip"]["segments_by_kind"] == {"image": 1, "text_passage": 1}
    assert spaces["clap"]["segments_by_kind"] == {"audio_window": 1, "text_passage": 1}
    assert status["last_run"]["status"] == "completed"
    assert {m["id"] for m in status["models"]} == {"fake-clip:v1", "fake-clap:v1"}


def test_index_json_report(media: Path) -> None:
    first = json.loads(invoke("index", str(media), "--workers", "0", "--json").stdout)
    assert first["embedded_files"] == 3 and first["failed"] == 1
    assert first["errors"][0]["path"] == str(media / "broken.jpg")
    again = json.loads(invoke("index", str(media), "--json").stdout)
    assert again["unchanged"] == 4 and again["files_read"] == 0


def test_errors_lists_broken_files_one_line_each(media: Path) -> None:
    invoke("index", str(media), "--quiet")
    res = invoke("errors")
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{media / 'broken.jpg'}: ")
    rows = json.loads(invoke("errors", "--json").stdout)
    assert rows[0]["modality"] == "image" and "Traceback" not in rows[0]["error"]


def test_info_shows_provenance(media: Path) -> None:
    invoke("index", str(media), "--quiet")
    info = json.loads(invoke("info", str(media / "memo.txt"), "--json").stdout)
    assert info["modality"] == "text" and info["status"] == "indexed"
    spaces = {e["space"]: e for e in info["encodings"]}
    assert set(spaces) == {"clip", "clap"}
    assert spaces["clip"]["model"]["id"] == "fake-clip:v1"
    seg = spaces["clip"]["segments"][0]
    assert seg["kind"] == "text_passage" and seg["char_start"] == 0 and seg["vector_id"] is not None
    text = invoke("info", str(media / "beep.wav"))
    assert "audio_window 0.0-" in text.stdout


def test_remove_forgets_files(media: Path) -> None:
    invoke("index", str(media), "--quiet")
    res = invoke("remove", str(media / "cat.png"), "--json")
    assert json.loads(res.stdout)["removed"] == 1
    status = json.loads(invoke("status", "--json").stdout)
    assert status["files"] == 3
    assert invoke("info", str(media / "cat.png")).exit_code == ExitCode.NO_INDEX
    assert invoke("remove", str(media / "nope.png")).exit_code == ExitCode.NOT_FOUND


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["index", "/definitely/not/here"], ExitCode.NOT_FOUND),
        (["index", ".", "--modalities", "hologram"], ExitCode.USAGE),
        (["info", "/tmp/x"], ExitCode.NO_INDEX),
        (["errors"], ExitCode.NO_INDEX),
        (["index"], ExitCode.USAGE),
    ],
)
def test_exit_codes(args: list[str], code: int) -> None:
    res = invoke(*args)
    assert res.exit_code == code
    if code != ExitCode.USAGE:
        assert res.stderr.startswith("xmr: error: ") and len(res.stderr.strip().splitlines()) == 1
        assert "Traceback" not in res.stderr


def test_status_on_empty_index() -> None:
    res = invoke("status")
    assert res.exit_code == 0 and "nothing indexed yet" in res.stdout
    assert json.loads(invoke("status", "--json").stdout)["exists"] is False


def test_index_option_overrides_xmr_home(media: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    invoke("index", str(media), "--quiet", "--index", str(other))
    assert (other / "catalogue.db").exists()
    assert json.loads(invoke("status", "--json").stdout)["exists"] is False
    assert json.loads(invoke("status", "--json", "--index", str(other)).stdout)["files"] == 4


def test_debug_env_shows_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMR_DEBUG", "1")
    res = invoke("info", "/tmp/x")
    assert res.exit_code == ExitCode.NO_INDEX and "Traceback" in res.stderr


_NO_TORCH = (
    "import sys\n"
    "from xmr.cli import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    "heavy = sorted(m for m in ('torch', 'open_clip', 'laion_clap', 'transformers', 'pillow_heif', 'rawpy',"
    " 'pypdfium2') if m in sys.modules)\n"
    "sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')\n"
)


@pytest.mark.parametrize("args", [["--help"], ["status"], ["status", "--json"], ["errors"], ["index", "--help"]])
def test_light_commands_do_not_import_torch(args: list[str], media: Path) -> None:
    invoke("index", str(media), "--quiet")
    res = subprocess.run([sys.executable, "-c", _NO_TORCH, *args], capture_output=True, text=True, timeout=60)
    assert "HEAVY=\n" in res.stderr, res.stderr


def test_help_imports_nothing_heavy() -> None:
    """What keeps `xmr --help` fast: it loads the CLI and nothing of the engine (the time
    itself is measured by benchmarks/startup.py, not asserted here)."""
    engine = ("torch", "open_clip", "transformers", "huggingface_hub", "numpy", "sqlite3", "hnswlib", "PIL")
    script = (
        "import sys\n"
        "from xmr.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"sys.stderr.write('LOADED=' + ','.join(m for m in {engine!r} if m in sys.modules) + '\\n')\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "Usage" in res.stdout, res.stderr
    assert "LOADED=\n" in res.stderr, res.stderr


def test_file_names_that_look_like_markup_are_plain_text(tmp_path: Path) -> None:
    root = tmp_path / "mk"
    odd = root / "a[/x]" / "[bold]"
    odd.mkdir(parents=True)
    (odd / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    make_image(odd / "ok.png", 1)
    res = invoke("index", str(root), "--workers", "0")
    assert res.exit_code == 0, res.stderr
    assert f"{odd / 'bad.png'}:" in res.stderr
    assert json.loads(invoke("status", "--json").stdout)["files"] == 2
    assert invoke("info", str(odd / "ok.png")).exit_code == 0
    assert invoke("remove", str(odd)).exit_code == 0
