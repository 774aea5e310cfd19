"""`xmr search` through a running `xmr serve`: same outputs, fallbacks, --no-server, a light client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_helpers import Server, index_media, running_server

from xmr import paths
from xmr.errors import ExitCode
from xmr.server.address import ServerAddress, address_path, write_address

pytestmark = pytest.mark.usefixtures("fake_encoders")


@pytest.fixture
def media(tmp_path: Path) -> Path:
    return index_media(tmp_path / "media")


@pytest.fixture
def server(media: Path) -> Iterator[Server]:
    with running_server(paths.index_dir()) as s:
        yield s


def _run(xmr_cmd: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(xmr_cmd + ["search", *args], capture_output=True, timeout=120)


def _queries(server: Server) -> int:
    return int(server.request("GET", "/api/status").json()["server"]["queries"])


def _comparable(out: bytes, json_doc: bool) -> object:
    if not json_doc:
        return out
    doc = json.loads(out)
    doc.pop("elapsed_s")
    return doc


def test_the_cli_uses_the_server_and_prints_what_it_prints_in_process(
    server: Server, media: Path, xmr_cmd: list[str]
) -> None:
    cases = [
        (["harbour lights", "--json", "-k", "7"], True),
        (['"sea" + 2:"waves" - "city"', "--json", "--explain"], True),
        (["bread", "--jsonl", "--type", "text", "--type", "audio"], False),
        (["stars", "--paths", "--under", str(media / "images")], False),
        (["stars", "-0", "-k", "4"], False),
        (["light", "-k", "5"], False),  # score<TAB>path lines
        (["light", "--min-score", "1", "--json", "--all-segments"], True),
        (["--image", str(media / "images" / "cmyk.jpg"), "--json", "--explain", "-k", "3"], True),
        (["--audio", str(media / "audio" / "long_35s.ogg"), "--all-segments", "--jsonl", "-k", "2"], False),
        (["night", "--text-file", f"2:{media / 'text' / 'bread.md'}", "--json"], True),
        ([f"{media / 'images' / 'gray.png'}", "-k", "2", "--paths"], False),
    ]
    for args, is_json in cases:
        before = _queries(server)
        remote = _run(xmr_cmd, *args)
        assert remote.returncode == 0, remote.stderr
        assert _queries(server) == before + 1, args  # answered by the server
        local = _run(xmr_cmd, *args, "--no-server")
        assert local.returncode == 0, local.stderr
        assert _queries(server) == before + 1, args  # --no-server did not ask it
        assert _comparable(remote.stdout, is_json) == _comparable(local.stdout, is_json), args
        assert remote.stdout.strip(), args
    cmyk = _run(xmr_cmd, "--image", str(media / "images" / "cmyk.jpg"), "-k", "1", "--paths")
    assert cmyk.stdout == f"{media / 'images' / 'cmyk.jpg'}\n".encode()


def test_errors_through_the_server_are_the_in_process_errors(server: Server, media: Path, xmr_cmd: list[str]) -> None:
    for args, code in [
        (["--image", str(media / "broken" / "truncated.jpg")], ExitCode.BAD_INPUT),
        (["--audio", str(media / "images" / "gray.png")], ExitCode.BAD_INPUT),
        (["x", "--type", "hologram"], ExitCode.USAGE),
        (["x", "--type", "audio", "--under", "/nowhere"], None),
    ]:
        remote = _run(xmr_cmd, *args)
        local = _run(xmr_cmd, *args, "--no-server")
        assert remote.returncode == local.returncode, (args, remote.stderr, local.stderr)
        if code is not None:
            assert remote.returncode == code
            line = remote.stderr.decode().strip()
            assert line.startswith("xmr: error: ") and len(line.splitlines()) == 1
        assert remote.stdout == local.stdout


def test_no_server_or_a_silent_one_falls_back_in_process(media: Path, xmr_cmd: list[str]) -> None:
    expected = _run(xmr_cmd, "bread", "--paths", "--no-server").stdout
    assert expected
    index_dir = paths.index_dir()
    assert not address_path(index_dir).exists()
    assert _run(xmr_cmd, "bread", "--paths").stdout == expected  # no server
    # a stale file: its process is gone
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_address(index_dir, ServerAddress("http://127.0.0.1:9", "t", dead.pid))
    assert _run(xmr_cmd, "bread", "--paths").stdout == expected
    # a server that accepts connections but never answers: the 200 ms probe gives up
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        write_address(index_dir, ServerAddress(f"http://127.0.0.1:{silent.getsockname()[1]}", "t", os.getpid()))
        res = _run(xmr_cmd, "bread", "--paths")
        assert res.returncode == 0 and res.stdout == expected
    finally:
        silent.close()
    # a garbled file is no server either
    address_path(index_dir).write_text("{not json")
    assert _run(xmr_cmd, "bread", "--paths").stdout == expected


def test_the_client_path_imports_neither_torch_nor_numpy(server: Server, media: Path) -> None:
    code = (
        "import sys\n"
        "from xmr.cli import main\n"
        "try:\n"
        "    main(['search', 'bread', '--json', '--explain', '--semantic-only', '--image', sys.argv[1]])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'open_clip', 'laion_clap', 'sqlite3') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    before = _queries(server)
    res = subprocess.run(
        [sys.executable, "-c", code, str(media / "images" / "rgba.png")], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stderr
    assert json.loads(res.stdout)["results"][0]["path"] == str(media / "images" / "rgba.png")
    assert _queries(server) == before + 1


def test_names_that_are_not_utf8_come_out_exactly_through_the_server(tmp_path: Path, xmr_cmd: list[str]) -> None:
    from test_indexer import make_image

    root = tmp_path / "mu"
    root.mkdir()
    raw = os.fsencode(root) + b"/caf\xe9.png"
    make_image(Path(os.fsdecode(raw)), 1)
    assert subprocess.run(xmr_cmd + ["index", str(root), "--quiet", "--workers", "0"], timeout=120).returncode == 0
    with running_server(paths.index_dir()) as server:
        before = _queries(server)
        out = _run(xmr_cmd, "x", "-0")
        assert out.stdout == raw + b"\0"
        assert _run(xmr_cmd, "x", "--paths").stdout == raw + b"\n"
        assert _queries(server) == before + 2
