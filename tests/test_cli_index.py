"""`xmr index`, `status`, `errors`, `info`, `remove` through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import invoke
from test_indexer import make_audio, make_image, make_text
from test_watch import DEADLINE_S, indexed, wait_for

from xmr import paths
from xmr.catalogue import Catalogue
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


# -- index --watch: a real process, real file changes, real signals ---------------------------------


class WatchProcess:
    """``python -m MODULE index --watch ROOT --json`` with stdout and stderr in files."""

    def __init__(
        self,
        tmp_path: Path,
        root: Path,
        *args: str,
        module: str = "xmr",
        delay: float = 0.0,
        prefix: tuple[str, ...] = (),
    ):
        self.out, self.err = tmp_path / "watch.out", tmp_path / "watch.err"
        env = dict(os.environ, FAKE_ENCODER_DELAY=str(delay))
        cmd = [*prefix, sys.executable, "-m", module, "index", "--watch", str(root), "--workers", "0", "--json", *args]
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        wait_for(condition, what, alive=lambda: self.proc.poll() is None or condition())

    def end(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=DEADLINE_S)

    def runs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def stderr(self) -> str:
        return self.err.read_text()


def _notes(root: Path, n: int) -> Path:
    root.mkdir()
    for i in range(n):
        make_text(root / f"n{i}.txt", i, words=12)
    return root


def test_index_watch_follows_changes_then_stops_on_sigint(tmp_path: Path) -> None:
    root = _notes(tmp_path / "notes", 3)
    w = WatchProcess(tmp_path, root)
    try:
        w.wait_for(lambda: len(indexed()) == 3, "the first full run")
        make_text(root / "created.txt", 10, words=12)
        w.wait_for(lambda: str(root / "created.txt") in indexed(), "a created file")
        before = indexed()[str(root / "n0.txt")]
        make_text(root / "n0.txt", 11, words=12)
        w.wait_for(lambda: indexed().get(str(root / "n0.txt")) not in (None, before), "a modified file")
        moved = indexed()[str(root / "n1.txt")]
        (root / "sub").mkdir()
        os.rename(root / "n1.txt", root / "sub" / "moved.txt")
        w.wait_for(
            lambda: indexed().get(str(root / "sub" / "moved.txt")) == moved and str(root / "n1.txt") not in indexed(),
            "a moved file",
        )
        (root / "n2.txt").unlink()
        w.wait_for(lambda: str(root / "n2.txt") not in indexed(), "a deleted file")
        runs_before_burst = len(w.runs())
        burst = root / "burst"
        burst.mkdir()
        for i in range(2000):
            (burst / f"b{i:04d}.txt").write_text(f"burst note {i} about a violin in the meadow\n")
        w.wait_for(lambda: sum(p.startswith(str(burst)) for p in indexed()) == 2000, "the burst of 2,000 files")
        w.wait_for(lambda: sum(r["new"] for r in w.runs()[runs_before_burst:]) == 2000, "the burst's runs reported")
        # a search sees the new files (fake encoders: a file's own text finds it first)
        res = subprocess.run(
            [sys.executable, "-m", "xmr", "search", "burst note 1234 about a violin in the meadow", "--json"],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
        )
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["results"][0]["path"] == str(burst / "b1234.txt")
    finally:
        code = w.end(signal.SIGINT)
    assert code == 0, w.stderr()
    runs = w.runs()
    burst_runs = runs[runs_before_burst:]
    assert sum(r["new"] for r in burst_runs) == 2000
    assert len(burst_runs) < 100  # debounced and batched: a few runs, not one per file
    assert "stopped watching" in w.stderr()
    assert "Traceback" not in w.stderr()


def test_index_watch_stops_cleanly_on_sigterm_mid_run_and_resumes(tmp_path: Path) -> None:
    root = _notes(tmp_path / "notes", 400)
    w = WatchProcess(tmp_path, root, delay=0.02)
    w.wait_for(lambda: len(indexed()) > 0, "a first commit")
    code = w.end(signal.SIGTERM)
    assert code == 0, w.stderr()
    kept = indexed()
    assert 0 < len(kept) < 400  # it stopped after a commit, not at the end
    assert "the next run" in w.stderr()
    again = WatchProcess(tmp_path, root)
    again.wait_for(lambda: len(indexed()) == 400, "the next run to finish the tree")
    assert again.end(signal.SIGTERM) == 0, again.stderr()
    after = indexed()
    assert all(after[p] == h for p, h in kept.items())


def test_index_watch_killed_loses_nothing_committed(tmp_path: Path) -> None:
    root = _notes(tmp_path / "notes", 3)
    w = WatchProcess(tmp_path, root, delay=0.02)
    w.wait_for(lambda: len(indexed()) == 3, "the first full run")
    for i in range(400):
        (root / f"late{i:03d}.txt").write_text(f"late note {i} about thunder over the harbour\n")
    w.wait_for(lambda: len(indexed()) > 3, "a commit of the new files")
    w.proc.kill()
    w.proc.wait(timeout=DEADLINE_S)
    kept = indexed()
    assert 3 < len(kept) < 403
    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        assert cat.integrity_check() == "ok"
    # a later run resumes: the rest is indexed, what was committed is as it was
    again = WatchProcess(tmp_path, root)
    again.wait_for(lambda: len(indexed()) == 403, "the later run")
    assert again.end(signal.SIGINT) == 0, again.stderr()
    after = indexed()
    assert all(after[p] == h for p, h in kept.items())


def test_index_watch_falls_back_to_polling_with_one_notice(tmp_path: Path) -> None:
    root = _notes(tmp_path / "notes", 2)
    w = WatchProcess(tmp_path, root, "--poll-interval", "0.2", module="watch_limited")
    try:
        w.wait_for(lambda: len(indexed()) == 2, "the first full run")
        for i in range(3):
            make_text(root / f"polled{i}.txt", 20 + i, words=12)
            w.wait_for(lambda i=i: str(root / f"polled{i}.txt") in indexed(), "a file found by polling")
    finally:
        code = w.end(signal.SIGINT)
    assert code == 0, w.stderr()
    notices = [line for line in w.stderr().splitlines() if "cannot watch with OS notifications" in line]
    assert len(notices) == 1, w.stderr()
    assert "polling every 0.2 s" in notices[0] and "fs.inotify.max_user_watches" in notices[0]


# a user namespace of its own lets one process have a lower inotify limit (Linux >= 4.9)
LOW_INOTIFY = ("unshare", "-Ur", "sh", "-c", 'echo 10 > /proc/sys/user/max_inotify_watches && exec "$@"', "sh")


def _can_lower_inotify_limit() -> bool:
    try:
        return subprocess.run([*LOW_INOTIFY, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _can_lower_inotify_limit(), reason="needs unprivileged user namespaces (unshare -Ur)")
def test_index_watch_at_the_real_inotify_limit_polls(tmp_path: Path) -> None:
    """max_user_watches lowered to 10 for this process only, 30 folders to watch: the OS
    refuses (ENOSPC), and the watch polls instead of failing."""
    root = tmp_path / "folders"
    for i in range(30):
        (root / f"d{i:02d}").mkdir(parents=True)
        make_text(root / f"d{i:02d}" / "n.txt", i, words=12)
    w = WatchProcess(tmp_path, root, "--poll-interval", "0.2", prefix=LOW_INOTIFY)
    try:
        w.wait_for(lambda: len(indexed()) == 30, "the first full run")
        make_text(root / "d25" / "late.txt", 99, words=12)  # in a folder inotify could not watch
        w.wait_for(lambda: str(root / "d25" / "late.txt") in indexed(), "a file found by polling")
    finally:
        code = w.end(signal.SIGINT)
    assert code == 0, w.stderr()
    notices = [line for line in w.stderr().splitlines() if "cannot watch with OS notifications" in line]
    assert len(notices) == 1 and "watch limit" in notices[0], w.stderr()


def test_index_ocr_reads_text_in_images_and_keeps_the_choice(tmp_path: Path) -> None:
    """`--ocr all`: a screenshot's words become passages in both spaces, found by a phrase, said to
    be OCR; the choice is kept, and `--ocr off` on new files reads nothing."""
    from test_ocr import SIGN, text_image

    root = tmp_path / "shots"
    root.mkdir()
    text_image([SIGN], size=(900, 200))[0].save(root / "shot.png")
    make_image(root / "cat.png", 1)
    assert "--ocr" in invoke("index", "--help").stdout
    res = invoke("index", str(root), "--ocr", "all", "--workers", "0")
    assert res.exit_code == 0 and "2 indexed" in res.stderr, res.stderr
    spaces = {s["space"]: s for s in json.loads(invoke("status", "--json").stdout)["spaces"]}
    assert spaces["clap"]["segments_by_kind"] == {"text_passage": 1}
    assert spaces["clip"]["segments_by_kind"] == {"image": 2, "text_passage": 1}
    found = json.loads(invoke("search", SIGN, "--json", "--explain", "-k", "1").stdout)["results"][0]
    assert found["path"] == str(root / "shot.png") and found["explain"]["segment"] == "ocr"
    assert found["snippet"] == SIGN
    info = json.loads(invoke("info", str(root / "shot.png"), "--json").stdout)
    assert info["ocr"]["status"] == "text" and info["ocr"]["settings"]["mode"] == "all"
    text_image(["second screenshot words"], size=(900, 200))[0].save(root / "later.png")
    assert invoke("index", str(root), "--ocr", "off", "--workers", "0").exit_code == 0
    assert json.loads(invoke("info", str(root / "later.png"), "--json").stdout)["ocr"] is None
