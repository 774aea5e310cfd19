"""The index lock: one writer at a time, the holder named by pid, `--wait` queues behind it."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cli_helpers import start_slow_index
from test_crash import make_big_tree

from xmr import paths
from xmr.errors import ExitCode, IndexLocked
from xmr.lock import index_lock, lock_path


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    with index_lock(index):
        assert lock_path(index).read_text().split() == [str(os.getpid())]
        with pytest.raises(IndexLocked) as info, index_lock(index):
            pass
    assert info.value.pid == os.getpid() and f"pid {os.getpid()}" in str(info.value)
    assert info.value.exit_code == ExitCode.LOCKED == 12
    with index_lock(index):  # released on exit: the next writer gets it at once
        pass


def test_wait_blocks_until_the_holder_is_done(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    events: list[str] = []
    waited_for: list[int | None] = []

    def second() -> None:
        with index_lock(index, wait=True, on_wait=waited_for.append):
            events.append("second got it")

    with index_lock(index):
        t = threading.Thread(target=second)
        t.start()
        deadline = time.monotonic() + 30
        while not waited_for and time.monotonic() < deadline:
            time.sleep(0.01)
        events.append("first done")
    t.join(timeout=30)
    assert waited_for == [os.getpid()]
    assert events == ["first done", "second got it"]


@pytest.mark.usefixtures("fake_encoders")
def test_second_xmr_index_names_the_running_one_or_waits_for_it(tmp_path: Path, xmr_cmd: list[str]) -> None:
    root = tmp_path / "tree"
    expected = make_big_tree(root, 300)
    cmd = xmr_cmd + ["index", str(root), "--quiet", "--workers", "0"]
    first = start_slow_index(cmd[4:], delay=0.01, min_committed=20)
    try:
        assert first.poll() is None, "the first run ended before the second could meet its lock"
        refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        # not --quiet: the waiter says whom it waits for
        waiter = subprocess.Popen(
            xmr_cmd + ["index", str(root), "--wait", "--workers", "0"], stderr=subprocess.PIPE, text=True
        )
        waiter_started_first = first.poll() is None
        _, waiter_err = waiter.communicate(timeout=300)
        first_done = first.poll() is not None  # the waiter finished only after the first run
    finally:
        first.wait(timeout=300)
    assert refused.returncode == ExitCode.LOCKED, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xmr: error: ") and f"pid {first.pid}" in lines[0]
    assert first.returncode == 0, first.stderr.read().decode()
    assert waiter.returncode == 0, waiter_err
    assert f"waiting for another xmr process (pid {first.pid})" in waiter_err
    assert waiter_started_first and first_done
    from xmr.catalogue import Catalogue

    with Catalogue.open(paths.index_dir(), readonly=True) as cat:
        assert {r.path for r in cat.files_under(str(root)).values() if r.status == "indexed"} == expected
