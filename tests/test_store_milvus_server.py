"""The Milvus backend against a Milvus server: ``milvus-lite server`` in a subprocess on
127.0.0.1 (checked: every socket it listens on is a loopback one), reached through
``milvus://127.0.0.1:PORT`` as a Milvus cluster would be. The vector-index contract tests
run against it, and ``xmr index --store milvus://...`` indexes the fixtures, then another
process searches them.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_store_contract as contract
from cli_helpers import invoke
from test_store_contract import memory_backend, milvus_lite  # noqa: F401 - the contract's autouse fixtures
from test_store_milvus import QUERIES, _top10

from xmr.catalogue import Catalogue
from xmr.store import index_backend, open_index
from xmr.store.factory import URI_SETTING
from xmr.store.milvus import close_clients

pytestmark = pytest.mark.slow  # a server process (a few seconds to start) and ~20 collections

REPO = Path(__file__).resolve().parent.parent
# 127.0.0.1 and ::1 as /proc/net/tcp* write them; gRPC's dual-stack socket shows 127.0.0.1
# as ::ffff:127.0.0.1
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def listening(pid: int | None = None) -> list[tuple[str, int]]:
    """(hex local address, port) of the listening TCP sockets, of process ``pid`` or of all."""
    inodes = None
    if pid is not None:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            addr, _, port = cols[1].partition(":")
            if cols[3] == "0A" and (inodes is None or cols[9] in inodes):  # 0A: LISTEN
                out.append((addr, int(port, 16)))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen, int]]:
    exe = Path(sys.executable).with_name("milvus-lite")
    if not exe.exists():
        pytest.fail(f"milvus-lite is not installed beside {sys.executable} (pip install 'xmr[milvus]')")
    port = _free_port()
    data = tmp_path_factory.mktemp("milvus-server")
    cmd = [str(exe), "server", "--data-dir", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120  # imports and a database directory: seconds on a loaded machine
        while not any(p == port for _, p in listening(proc.pid)):
            if proc.poll() is not None:
                pytest.fail(f"milvus-lite server exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("milvus-lite server did not listen within 120 s")
            time.sleep(0.1)
        yield proc, port
    finally:
        close_clients()
        proc.send_signal(signal.SIGINT)  # it drains its requests and closes the database on SIGINT
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def milvus_lite_db(server: tuple[subprocess.Popen, int]) -> str:
    """The contract's Milvus address (its ``milvus_lite`` fixture adds a namespace per test)."""
    return f"milvus://127.0.0.1:{server[1]}"


@pytest.fixture
def backend(milvus_lite: None, milvus_lite_db: str) -> str:  # noqa: F811 - the fixture, by name
    assert contract.BACKENDS["milvus"]["uri"] == milvus_lite_db  # the server, not milvus-lite in-process
    return "milvus"


# every contract test that runs per backend, here against the server only
globals().update(
    {
        name: fn
        for name, fn in vars(contract).items()
        if name.startswith("test_") and callable(fn) and "backend" in inspect.signature(fn).parameters
    }
)


def test_the_server_listens_on_loopback_only(server: tuple[subprocess.Popen, int]) -> None:
    proc, port = server
    mine = listening(proc.pid)
    assert (port in {p for _, p in mine}) and mine
    assert {a for a, _ in mine} <= LOOPBACK, mine


@pytest.mark.usefixtures("fake_encoders")
def test_index_through_the_server_then_search_from_another_process(
    server: tuple[subprocess.Popen, int], tmp_path: Path, xmr_cmd: list[str]
) -> None:
    """What a server is for: the index run and later searches in other processes share it;
    its answers are hnswlib's (FLAT: exhaustive on both sides at this size)."""
    media = Path(shutil.copytree(REPO / "fixtures" / "media", tmp_path / "media"))
    uri = f"milvus://127.0.0.1:{server[1]}"
    milvus_idx, hnsw_idx = tmp_path / "idx-milvus", tmp_path / "idx-hnsw"
    res = invoke("index", str(media), "--index", str(milvus_idx), "--workers", "0", "--store", f"{uri}?index=FLAT")
    assert res.exit_code == 0, res.stderr
    assert invoke("index", str(media), "--index", str(hnsw_idx), "--workers", "0").exit_code == 0
    with Catalogue.open(milvus_idx, readonly=True) as cat:
        assert index_backend(cat) == "milvus" and cat.get_setting(URI_SETTING) == f"{uri}?index=FLAT"
        for model in cat.models():
            store = open_index("milvus", milvus_idx / "ann", cat, model["space"], model["id"], int(model["dim"]))
            assert store.count() == cat.vector_count(model["space"], model["id"]) > 0
    for query in QUERIES:
        assert [p for p, _ in _top10(milvus_idx, query)] == [p for p, _ in _top10(hnsw_idx, query)], query
    # another process (the fake encoders reach it through the environment), while this one holds a client
    query = QUERIES[0]
    out = subprocess.run(
        [*xmr_cmd, "search", query, "--index", str(milvus_idx), "-k", "10", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "searching exactly" not in out.stderr  # the fallback's notice: the server answered
    want = [p for p, _ in _top10(hnsw_idx, query)]
    assert [r["path"] for r in json.loads(out.stdout)["results"]] == want
