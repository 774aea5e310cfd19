"""`xmr search --preview`: the escape sequences' exact framing, detection, and nothing into a pipe."""

from __future__ import annotations

import base64
import io
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke
from server_helpers import index_media

from xmr import preview

ESC = b"\x1b"


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)  # incompressible
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    return buf.getvalue()


def test_kitty_sends_a_large_png_in_chunks_of_at_most_4096_base64_bytes() -> None:
    png = _png(64, 64)
    assert len(png) > 3 * 4096  # several chunks
    seq = preview.kitty(png)
    frames = re.findall(rb"\x1b_G([^;]*);([^\x1b]*)\x1b\\", seq)
    assert b"".join(b"\x1b_G%s;%s\x1b\\" % f for f in frames) == seq  # nothing outside the frames
    assert len(frames) == -(-len(base64.b64encode(png)) // 4096)
    keys = [k for k, _ in frames]
    assert keys[0] == b"a=T,f=100,q=2,m=1"  # transmit+show, PNG, no reply, more to come
    assert keys[1:-1] == [b"m=1"] * (len(frames) - 2) and keys[-1] == b"m=0"
    payloads = [p for _, p in frames]
    assert all(len(p) == 4096 for p in payloads[:-1]) and 0 < len(payloads[-1]) <= 4096
    assert base64.b64decode(b"".join(payloads)) == png


def test_kitty_sends_a_small_png_in_one_frame() -> None:
    png = _png(4, 4)
    assert preview.kitty(png) == b"\x1b_Ga=T,f=100,q=2,m=0;" + base64.b64encode(png) + b"\x1b\\"


def test_iterm_inline_image_framing() -> None:
    png = _png(16, 16)
    expected = b"\x1b]1337;File=inline=1;size=" + str(len(png)).encode() + b":" + base64.b64encode(png) + b"\x07"
    assert preview.iterm(png) == expected
    assert preview.encode("iterm", png) == expected and preview.encode("kitty", png) == preview.kitty(png)


@pytest.mark.parametrize(
    ("env", "tty", "expected"),
    [
        ({"TERM": "xterm-kitty"}, True, "kitty"),
        ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "3"}, True, "kitty"),
        ({"TERM": "xterm-ghostty"}, True, "kitty"),
        ({"TERM_PROGRAM": "iTerm.app", "TERM": "xterm-256color"}, True, "iterm"),
        ({"TERM_PROGRAM": "WezTerm", "TERM": "xterm-256color"}, True, "iterm"),
        ({"TERM": "xterm-256color"}, True, None),
        ({"TERM": "xterm-kitty"}, False, None),  # a pipe: never
        ({"TERM": "xterm-kitty", "XMR_PREVIEW": "iterm"}, False, None),  # not even when forced
        ({"TERM": "screen-256color", "KITTY_WINDOW_ID": "3"}, True, None),  # tmux/screen swallow them
        ({"TERM": "xterm-kitty", "TMUX": "/tmp/tmux-0/default,1,0"}, True, None),
        ({"TERM": "xterm-256color", "XMR_PREVIEW": "kitty"}, True, "kitty"),
        ({"TERM": "xterm-kitty", "XMR_PREVIEW": "none"}, True, None),
    ],
)
def test_detection_from_the_environment(env: dict[str, str], tty: bool, expected: str | None) -> None:
    assert preview.detect(env, tty) == expected


def test_thumbnail_source_is_the_image_or_the_result_s_own_picture() -> None:
    class R:
        def __init__(self, modality: str, path: str, thumbnail: str | None = None) -> None:
            self.modality, self.path, self.thumbnail = modality, path, thumbnail

    assert preview.thumbnail_source(R("image", "/a.jpg")) == "/a.jpg"
    assert preview.thumbnail_source(R("audio", "/a.wav")) is None
    assert preview.thumbnail_source(R("text", "/a.txt")) is None
    assert preview.thumbnail_source(R("video", "/v.mp4", thumbnail="/cache/v-12.5.jpg")) == "/cache/v-12.5.jpg"


@pytest.fixture
def indexed(tmp_path: Path, fake_encoders: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XMR_BACKEND_CLIP", "fake_encoders:FakeClip")
    monkeypatch.setenv("XMR_BACKEND_CLAP", "fake_encoders:FakeClap")
    return index_media(tmp_path / "media")


def _search_args() -> list[str]:
    return [sys.executable, "-m", "xmr", "search", "harbour", "--type", "image", "-k", "3", "--preview", "--no-server"]


def test_a_kitty_tty_gets_the_images(indexed: Path) -> None:
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="xterm-kitty", COLUMNS="120")
    proc = subprocess.Popen(_search_args(), stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    err = proc.stderr.read() if proc.stderr else b""
    assert proc.wait(timeout=60) == 0, err
    shown = re.findall(rb"\x1b_Ga=T,f=100,q=2,m=[01];", out)
    assert len(shown) == 3  # one image per result
    payload = b""
    for m in re.finditer(rb"\x1b_G([^;]*);([^\x1b]*)\x1b\\", out):  # the first image's frames
        payload += m.group(2)
        if m.group(1).endswith(b"m=0"):
            break
    png = base64.b64decode(payload)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_a_pipe_gets_no_escape_sequences(indexed: Path) -> None:
    env = dict(os.environ, TERM="xterm-kitty", XMR_PREVIEW="kitty")
    res = subprocess.run(_search_args(), capture_output=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 3  # the plain "score<TAB>path" lines
    assert ESC not in res.stdout and ESC not in res.stderr


def test_clirunner_output_is_not_a_tty_so_no_images(indexed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-kitty")
    res = invoke("search", "harbour", "--type", "image", "-k", "3", "--preview")
    assert res.exit_code == 0, res.stderr
    assert "\x1b" not in res.stdout and len(res.stdout.splitlines()) == 3
