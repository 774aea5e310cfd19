"""`xmr search` in a real pseudo-terminal (80 and 140 columns): names are never broken across lines,
paths are links there and plain in a pipe."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from rich.cells import cell_len
from test_indexer import make_audio, make_image

from xmr import paths
from xmr.indexer import IndexOptions, index

pytestmark = pytest.mark.usefixtures("fake_encoders")

OSC8 = re.compile(r"\x1b]8;[^\x1b\x07]*(?:\x1b\\|\x07)")
CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

FOLDER = "a rather long folder name for the summer holiday photos"
NAMES = ["IMG_20240712_153012.png", "beach.png", "morning birds at the lake.wav", "seagulls.wav"]
LONG_NAME = "a photo whose name is far too long for any column of an eighty column table.png"


def _run_in_pty(args: list[str], cwd: Path, columns: int) -> str:
    """Run ``python -m xmr ARGS`` with its stdout on a pty of ``columns`` x 50; what it wrote."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "XMR_HYPERLINKS")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "xmr", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the pty
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks).decode("utf-8").replace("\r\n", "\n")


@pytest.fixture
def media(tmp_path: Path) -> Path:
    folder = tmp_path / "home" / FOLDER
    folder.mkdir(parents=True)
    for i, name in enumerate(NAMES):
        (make_image if name.endswith(".png") else make_audio)(folder / name, i + 1)
    make_image(folder / LONG_NAME, 9)
    index([folder], index_dir=paths.index_dir(), options=IndexOptions(workers=0))
    return folder


@pytest.mark.parametrize("columns", [80, 140])
def test_no_name_is_broken_across_lines(media: Path, columns: int) -> None:
    raw = _run_in_pty(["search", "holiday", "--explain", "-k", "10"], cwd=media.parent, columns=columns)
    assert OSC8.search(raw), "a terminal gets file:// links"
    assert "file://" in raw
    text = CSI.sub("", OSC8.sub("", raw))
    lines = text.splitlines()
    assert all(cell_len(line) <= columns for line in lines), text
    rows = [line for line in lines if re.match(r"\s*\d+ │", line)]
    assert len(rows) == len(NAMES) + 1
    path_cells = [row.split("│")[3].strip() for row in rows]
    for name in NAMES:  # short enough for the column: whole, on one line
        assert any(cell.endswith(name) for cell in path_cells), text
    long_cell = next(c for c in path_cells if c.endswith(".png") and c.split("/")[-1] not in NAMES)
    if columns == 140:
        assert long_cell.endswith(LONG_NAME)  # room enough at 140
    else:
        assert "…" in long_cell  # shortened in the middle, extension kept, on its one line
    # no row continues its path on a second line
    for line in lines:
        if "│" in line and not re.match(r"\s*\d+ │", line):
            assert line.split("│")[3].strip() == "", text
    assert all(c.startswith((FOLDER[:10], "…", "a ")) for c in path_cells)  # relative to the current folder
    # compact --explain: route, model, raw cosine; at 80 columns it wraps between its words, for the names
    explain = re.compile(r"direct fake-cl\w* -?\d\.\d{3}")
    if columns == 140:
        assert all(explain.search(row) for row in rows), text
    else:
        cells = " ".join(line.split("│")[-1].strip() for line in lines if "│" in line)
        assert len(explain.findall(cells)) == len(rows), text


def test_a_pipe_gets_no_links_nor_escapes(media: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "xmr", "search", "holiday"], cwd=media.parent, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout
    assert {line.split("\t", 1)[1] for line in out.stdout.splitlines()} == {
        str(media / n) for n in [*NAMES, LONG_NAME]
    }
