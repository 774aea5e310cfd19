"""No orphans: every child of `xmr index` / `xmr serve` ends when its parent does, however it ends."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from server_helpers import index_media, running_server

from xmr.procs import Terminated, raise_on_terminate

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")

WAIT_S = 5.0


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a live process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of every process below ``root``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            children.setdefault(st[0], []).append(int(entry))
    out: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            st = _stat(child)
            if st is not None:
                out[child] = st[2]
                todo.append(child)
    return out


def survivors(procs: dict[int, int]) -> list[int]:
    """The processes of ``procs`` still running (a zombie or a reused pid does not count)."""
    alive = []
    for pid, started in procs.items():
        st = _stat(pid)
        if st is not None and st[1] != "Z" and st[2] == started:
            alive.append(pid)
    return alive


def wait_gone(procs: dict[int, int]) -> list[int]:
    deadline = time.monotonic() + WAIT_S
    while (left := survivors(procs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def wait_children(pid: int, n: int, proc: subprocess.Popen) -> dict[int, int]:
    deadline = time.monotonic() + 120
    found: dict[int, int] = {}
    while time.monotonic() < deadline and proc.poll() is None:
        found = descendants(pid)
        if len(found) >= n:
            return found
        time.sleep(0.05)
    raise AssertionError(f"expected {n} children of {pid}, found {found} (exit {proc.poll()})")


def _images(root: Path, n: int) -> None:
    from PIL import Image

    root.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (32, 32), (i * 5 % 256, i * 11 % 256, i * 17 % 256)).save(root / f"img{i:03d}.png")


@pytest.fixture
def fake_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMR_BACKEND_CLIP", "fake_encoders:FakeClip")
    monkeypatch.setenv("XMR_BACKEND_CLAP", "fake_encoders:FakeClap")


def test_killed_index_leaves_no_decoder_and_no_resource_tracker(tmp_path: Path, fake_env: None) -> None:
    _images(tmp_path / "photos", 60)
    env = dict(os.environ, FAKE_ENCODER_DELAY="0.5")  # slow enough that the workers are there to see
    proc = subprocess.Popen(
        [sys.executable, "-m", "xmr", "index", str(tmp_path / "photos"), "--workers", "2", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # two decode workers and multiprocessing's resource tracker
        children = wait_children(proc.pid, 3, proc)
        proc.kill()
        proc.wait(timeout=30)
        assert wait_gone(children) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_a_stopped_server_leaves_no_sandbox(tmp_path: Path, fake_env: None, how: signal.Signals) -> None:
    media = index_media(tmp_path / "media", tmp_path / "index")
    with running_server(tmp_path / "index") as server:
        photo = media / "images" / "rgba.png"
        assert server.upload("image", photo.name, photo.read_bytes()).status == 200
        children = wait_children(server.proc.pid, 2, server.proc)  # the upload sandbox and its resource tracker
        server.proc.send_signal(how)
        code = server.proc.wait(timeout=30)
        assert wait_gone(children) == []
        if how != signal.SIGKILL:  # a clean stop
            assert code == 0
            assert not (tmp_path / "index" / "server.json").exists()


def _child_of_child(armed: multiprocessing.Queue, watch_only: bool) -> None:
    ctx = multiprocessing.get_context("spawn")
    ctx.Process(target=_sleeper, args=(armed, watch_only)).start()
    time.sleep(3600)


def _sleeper(armed: multiprocessing.Queue, watch_only: bool) -> None:
    from xmr import procs

    if watch_only:  # as on macOS: no death signal, only the watcher thread
        procs._set_pdeathsig = lambda sig: False
    procs.die_with_parent()
    armed.put(os.getpid())
    time.sleep(3600)


@pytest.mark.parametrize("watch_only", [False, True])
def test_die_with_parent_ends_a_worker_whose_parent_was_killed(watch_only: bool) -> None:
    ctx = multiprocessing.get_context("spawn")
    armed: multiprocessing.Queue = ctx.Queue()
    middle = ctx.Process(target=_child_of_child, args=(armed, watch_only))
    middle.start()
    worker: dict[int, int] = {}
    try:
        pid = armed.get(timeout=60)  # the worker armed its death signal and its watcher
        started = _stat(pid)
        assert started is not None
        worker[pid] = started[2]
        os.kill(middle.pid, signal.SIGKILL)
        middle.join(timeout=30)
        assert wait_gone(worker) == []
    finally:
        if middle.is_alive():
            middle.kill()
        for pid in survivors(worker):  # a failed test leaves nothing behind either
            os.kill(pid, signal.SIGKILL)


def test_sigterm_raises_terminated_so_cleanup_runs() -> None:
    before = signal.getsignal(signal.SIGTERM)
    restore = raise_on_terminate()
    cleaned = []
    try:
        with pytest.raises(Terminated):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler interrupts this
            finally:
                cleaned.append(True)
    finally:
        restore()
    assert cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_server_turns_sighup_into_uvicorns_graceful_stop() -> None:
    # SIGHUP raised as an exception could land inside an asyncio callback, which logs and swallows
    # it: the server then ran on. It must set uvicorn's should_exit instead, like SIGINT and SIGTERM.
    import uvicorn

    from xmr.server.run import _server_class

    before = signal.getsignal(signal.SIGHUP)
    server = _server_class(uvicorn)(uvicorn.Config(app=None))
    with server.capture_signals():
        assert signal.getsignal(signal.SIGHUP) == server.handle_exit
        signal.raise_signal(signal.SIGHUP)  # no exception here: a flag for the serving loop
        assert server.should_exit
    assert signal.getsignal(signal.SIGHUP) == before


def test_the_server_process_runs_one_blas_thread() -> None:
    # idle OpenBLAS threads spin after each of a warm query's small products, taking the text
    # encoder's core; the server asks for one before numpy loads, and leaves a user's choice alone
    import subprocess
    import sys

    code = (
        "import os, sys; from xmr.server.run import one_blas_thread; set_ = one_blas_thread(); "
        "import numpy, threadpoolctl; "
        "n = [p['num_threads'] for p in threadpoolctl.threadpool_info() if p['internal_api'] == 'openblas']; "
        "print(set_, os.environ.get('OPENBLAS_NUM_THREADS'), n)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "1", "[1]"], out
    env["OPENBLAS_NUM_THREADS"] = "2"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "2", "[2]"], out
