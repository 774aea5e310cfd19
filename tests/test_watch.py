"""Watch mode through the library (xmr.watch): where a run looks, the loop with a scripted
change source, the polling fallback, stopping; and once with the real watchfiles source."""

from __future__ import annotations

import errno
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_indexer import make_text

from xmr import paths
from xmr.crawl import walk, walk_within
from xmr.indexer import IndexOptions, IndexReport, index
from xmr.watch import BackgroundWatch, WatchOptions, coalesce, limit_reason, watch_index

pytestmark = pytest.mark.usefixtures("fake_encoders")

DEADLINE_S = 120  # generous: the condition is polled, never timed


def wait_for(condition: Callable[[], bool], what: str, alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if condition():
            return
        assert alive(), f"the watch ended before {what}"
        time.sleep(0.05)
    raise AssertionError(f"not seen within {DEADLINE_S} s: {what}")


def indexed(index_dir: Path | None = None) -> dict[str, str]:
    """path -> content hash of every indexed file."""
    db = paths.catalogue_path(index_dir or paths.index_dir())
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return dict(con.execute("SELECT path, hash FROM files WHERE status = 'indexed'").fetchall())
        finally:
            con.close()
    except sqlite3.OperationalError:  # not created, or created but not migrated yet
        return {}


# -- where a run looks ---------------------------------------------------------------------------


def _found(entries: Any) -> set[str]:
    return {str(e.path) for e in entries if hasattr(e, "size")}


def test_walk_within_follows_the_full_walks_rules(tmp_path: Path) -> None:
    root = tmp_path / "root"
    deep = root / "a" / "b"
    deep.mkdir(parents=True)
    (root / ".xmrignore").write_text("*.log\na/b/skip/\n")  # patterns from the root reach deep folders
    (root / "a" / ".xmrignore").write_text("secret.txt\n")
    for name in ("keep.txt", "x.log", "secret.txt"):
        (deep / name).write_text("words")
    (deep / "skip").mkdir()
    (deep / "skip" / "in.txt").write_text("words")
    (deep / ".hidden").mkdir()
    (deep / ".hidden" / "h.txt").write_text("words")
    (root / "other.txt").write_text("words")
    full = _found(walk([root], excludes=["other.txt"]))
    # the deep folder: exactly what the full walk yields under it
    below = {p for p in full if p.startswith(str(deep) + os.sep)}
    assert below == {str(deep / "keep.txt")}
    assert _found(walk_within([root], [deep], excludes=["other.txt"])) == below
    # single paths: kept, ignored (by each rule) or hidden
    for name, expected in [("keep.txt", True), ("x.log", False), ("secret.txt", False), ("skip/in.txt", False)]:
        got = _found(walk_within([root], [deep / name], excludes=["other.txt"]))
        assert got == ({str(deep / name)} if expected else set()), name
    assert _found(walk_within([root], [deep / ".hidden" / "h.txt"])) == set()
    assert _found(walk_within([root], [deep / ".hidden" / "h.txt"], include_hidden=True)) == {
        str(deep / ".hidden" / "h.txt")
    }
    # gone, outside every root, the root itself
    assert _found(walk_within([root], [deep / "gone.txt", tmp_path / "elsewhere"])) == set()
    assert _found(walk_within([root], [root], excludes=["other.txt"])) == full


def test_coalesce_takes_folders_for_many_siblings_and_drops_nested_places(tmp_path: Path) -> None:
    root = str(tmp_path)
    many = {f"{root}/burst/f{i}.txt" for i in range(40)}
    few = {f"{root}/two/a.txt", f"{root}/two/b.txt"}
    nested = {f"{root}/new", f"{root}/new/inner/x.txt"}
    assert sorted(coalesce(many | few | nested, [root], limit=10)) == sorted(
        [f"{root}/burst", f"{root}/new", *few]
    )
    # too many separate places: the whole roots
    scattered = {f"{root}/d{i}/f.txt" for i in range(20)}
    assert coalesce(scattered, [root], limit=10) == []
    assert len(coalesce(scattered, [root], limit=20)) == 20


def test_index_within_touches_only_the_places_given(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for d in ("a", "b"):
        for i in range(3):
            make_text(root / d / f"n{i}.txt", seed=i + (10 if d == "b" else 0))
    opts = IndexOptions(workers=0)
    index([root], options=opts)
    before = indexed()
    (root / "a" / "n0.txt").unlink()
    (root / "b" / "n0.txt").unlink()
    make_text(root / "a" / "new.txt", seed=99)
    make_text(root / "b" / "new.txt", seed=98)
    report = index([root], options=IndexOptions(workers=0, within=[str(root / "a")]))
    after = indexed()
    assert (report.new, report.removed) == (1, 1)
    assert str(root / "a" / "n0.txt") not in after and str(root / "a" / "new.txt") in after
    # b was not looked at: its deleted file is still listed, its new one not yet
    assert str(root / "b" / "n0.txt") in after and str(root / "b" / "new.txt") not in after
    assert {k: v for k, v in after.items() if "/b/" in k} == {k: v for k, v in before.items() if "/b/" in k}
    # a gone file given on its own vanishes
    report = index([root], options=IndexOptions(workers=0, within=[str(root / "b" / "n0.txt")]))
    assert report.removed == 1 and str(root / "b" / "n0.txt") not in indexed()


# -- the loop, with a scripted change source ----------------------------------------------------


class Script:
    """A change source the test drives: ``push`` a set of paths; optionally fail like an
    exhausted inotify (natively, before or after it started)."""

    def __init__(self, fail_native: BaseException | None = None, fail_after_ready: bool = False):
        self.changes: queue.Queue[set[str]] = queue.Queue()
        self.fail_native = fail_native
        self.fail_after_ready = fail_after_ready
        self.modes: list[bool] = []  # polling flag of each start
        self.delivered = 0  # changed paths the watch loop has received

    def push(self, *paths: Path | str) -> None:
        self.changes.put({str(p) for p in paths})

    def __call__(self, roots: list[str], polling: bool, stop: threading.Event) -> Iterator[set[str]]:
        self.modes.append(polling)
        if self.fail_native is not None and not polling and not self.fail_after_ready:
            raise self.fail_native
        yield set()  # watching
        if self.fail_native is not None and not polling:
            raise self.fail_native
        while not stop.is_set():
            try:
                item = self.changes.get(timeout=0.05)
            except queue.Empty:
                yield set()
                continue
            yield item
            self.delivered += len(item)  # asked for the next one: the watch loop has this one


class Recorder:
    def __init__(self) -> None:
        self.runs: list[tuple[IndexReport, int]] = []
        self.notices: list[str] = []
        self.failures: list[str] = []
        self.ready = threading.Event()

    def watching(self, roots: Any, polling: bool) -> None:
        self.ready.set()

    def indexed(self, report: IndexReport, changes: int) -> None:
        self.runs.append((report, changes))

    def fallback(self, notice: str) -> None:
        self.notices.append(notice)

    def failed(self, message: str) -> None:
        self.failures.append(message)


class Watching:
    """watch_index on a thread; ``stop()`` ends it and returns its summary."""

    def __init__(self, root: Path, source: Any, *, progress: Any = None, watch: WatchOptions | None = None):
        self.listener = Recorder()
        self.stop_event = threading.Event()
        self.result: dict[str, Any] = {}

        def run() -> None:
            try:
                self.result["summary"] = watch_index(
                    [root],
                    options=IndexOptions(workers=0),
                    watch=watch or WatchOptions(retry_s=0.2),
                    progress=progress,
                    listener=self.listener,
                    stop=self.stop_event,
                    source=source,
                )
            except BaseException as exc:  # surfaced by stop()
                self.result["error"] = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        """Until ``condition``; fails at once with the watch's own error if it ended."""

        def alive() -> bool:
            if "error" in self.result:
                raise self.result["error"]
            return self.thread.is_alive()

        wait_for(condition, what, alive)

    def stop(self) -> Any:
        self.stop_event.set()
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive()
        if "error" in self.result:
            raise self.result["error"]
        return self.result["summary"]


def _tree(tmp_path: Path, n: int = 3) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    for i in range(n):
        make_text(root / f"n{i}.txt", seed=i)
    return root


def test_changes_are_indexed_run_by_run(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    source = Script()
    w = Watching(root, source)
    w.wait_for(lambda: len(indexed()) == 3, "the first full run")
    # create, modify, move, delete; each reported as the OS would
    make_text(root / "new.txt", seed=50)
    source.push(root / "new.txt")
    w.wait_for(lambda: str(root / "new.txt") in indexed(), "a new file")
    old_hash = indexed()[str(root / "n0.txt")]
    make_text(root / "n0.txt", seed=51)
    source.push(root / "n0.txt")
    w.wait_for(lambda: indexed().get(str(root / "n0.txt")) not in (None, old_hash), "a modified file")
    moved_hash = indexed()[str(root / "n1.txt")]
    (root / "sub").mkdir()
    os.rename(root / "n1.txt", root / "sub" / "moved.txt")
    source.push(root / "n1.txt", root / "sub")
    w.wait_for(lambda: indexed().get(str(root / "sub" / "moved.txt")) == moved_hash, "a moved file")
    assert str(root / "n1.txt") not in indexed()
    (root / "n2.txt").unlink()
    source.push(root / "n2.txt")
    w.wait_for(lambda: str(root / "n2.txt") not in indexed(), "a deleted file")
    w.wait_for(lambda: len(w.listener.runs) == 5, "the last run's end")
    summary = w.stop()
    assert summary.runs == 5 and not summary.interrupted
    assert [changes for _, changes in w.listener.runs] == [0, 1, 1, 2, 1]
    assert sum(r.moved for r, _ in w.listener.runs) == 1
    assert w.listener.notices == []


def test_changes_outside_the_rules_start_no_run(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    source = Script()
    w = Watching(root, source)
    w.wait_for(lambda: len(w.listener.runs) == 1, "the first full run")
    (root / ".cache").mkdir()
    (root / ".cache" / "x.txt").write_text("hidden")
    source.push(root / ".cache" / "x.txt", root / ".cache", tmp_path / "outside.txt")
    make_text(root / "seen.txt", seed=7)
    source.push(root / "seen.txt")  # a marker after them
    w.wait_for(lambda: str(root / "seen.txt") in indexed(), "the marker file")
    w.wait_for(lambda: len(w.listener.runs) >= 2, "the marker run's end")
    w.stop()
    # the hidden and outside paths, reported first, are in no run: the next one has the marker only
    report, changes = w.listener.runs[1]
    assert changes == 1 and report.found == 1


def test_a_changed_xmrignore_makes_its_folder_looked_at_again(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / "drafts").mkdir()
    for i in range(2):
        make_text(root / "drafts" / f"d{i}.txt", seed=30 + i)
    source = Script()
    w = Watching(root, source)
    w.wait_for(lambda: len(indexed()) == 5, "the first full run")
    (root / "drafts" / ".xmrignore").write_text("d0.txt\n")
    source.push(root / "drafts" / ".xmrignore")  # hidden itself, but it changes what its folder holds
    w.wait_for(lambda: str(root / "drafts" / "d0.txt") not in indexed(), "the newly ignored file dropped")
    w.wait_for(lambda: len(w.listener.runs) == 2, "the run's end")
    summary = w.stop()
    assert str(root / "drafts" / "d1.txt") in indexed() and summary.removed == 1


def test_a_burst_ends_in_one_run(tmp_path: Path) -> None:
    """2,000 files reported one by one while the first run works are taken by one run."""
    root = _tree(tmp_path)
    source = Script()
    burst = root / "burst"
    held, sent = threading.Event(), threading.Event()

    class HoldFirstRun:
        """Holds the first run after its walk, until the burst is reported."""

        def phase(self, name: str, total: int | None) -> None:
            if name != "scanning" and not sent.is_set():
                held.set()
                sent.wait(DEADLINE_S)

        def advance(self, n: int = 1) -> None:
            pass

        def warn(self, message: str) -> None:
            pass

    w = Watching(root, source, progress=HoldFirstRun())
    w.wait_for(held.is_set, "the first run past its walk")
    burst.mkdir()
    for i in range(2000):
        (burst / f"f{i:04d}.txt").write_text(f"note {i} about the harbour lantern\n")
        source.push(burst / f"f{i:04d}.txt")
    w.wait_for(lambda: source.delivered == 2000, "the source to report the burst")
    sent.set()
    w.wait_for(lambda: len(w.listener.runs) == 2, "the run after the first")
    assert len(indexed()) == 2003
    summary = w.stop()
    assert summary.runs == 2
    assert w.listener.runs[1][1] == 2000 and w.listener.runs[1][0].new == 2000


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "OS file watch limit reached. (Error { kind: MaxFilesWatch, paths: [] })"),
        RuntimeError("Error creating recommended watcher: Too many open files (os error 24)"),
    ],
)
def test_watch_limit_at_start_falls_back_to_polling_with_one_notice(tmp_path: Path, error: Exception) -> None:
    root = _tree(tmp_path)
    source = Script(fail_native=error)
    w = Watching(root, source)
    w.wait_for(lambda: len(indexed()) == 3, "the first full run")
    for i in range(3):
        make_text(root / f"later{i}.txt", seed=20 + i)
        source.push(root / f"later{i}.txt")
        w.wait_for(lambda i=i: str(root / f"later{i}.txt") in indexed(), "a file seen by polling")
    summary = w.stop()
    assert source.modes == [False, True]
    assert summary.polling
    assert len(w.listener.notices) == 1
    assert "polling" in w.listener.notices[0] and "max_user_watches" in w.listener.notices[0]


def test_watch_limit_later_rescans_what_it_may_have_missed(tmp_path: Path) -> None:
    """A folder created later that cannot be watched (watchfiles: an error from the watcher
    thread): polling takes over, after a full run that finds what no event reported."""
    root = _tree(tmp_path)
    error = RuntimeError("error in underlying watcher: OS file watch limit reached.")
    ready = threading.Event()

    def source(roots: list[str], polling: bool, stop: threading.Event) -> Iterator[set[str]]:
        yield set()
        if not polling:
            ready.wait(DEADLINE_S)
            raise error
        while not stop.is_set():
            yield set()
            time.sleep(0.05)

    w = Watching(root, source)
    w.wait_for(lambda: len(indexed()) == 3, "the first full run")
    make_text(root / "unreported.txt", seed=33)  # no event says so
    ready.set()
    w.wait_for(lambda: str(root / "unreported.txt") in indexed(), "the file found by the rescan")
    summary = w.stop()
    assert summary.polling and len(w.listener.notices) == 1


def test_limit_reason_recognises_the_watch_limits() -> None:
    assert limit_reason(OSError(errno.ENOSPC, "No space left on device"))
    assert limit_reason(OSError(errno.EMFILE, "Too many open files"))
    assert limit_reason(RuntimeError("error in underlying watcher: OS file watch limit reached."))
    assert limit_reason(OSError("OS file watch limit reached. (Error { kind: MaxFilesWatch, paths: [] })"))
    assert limit_reason(PermissionError(errno.EACCES, "Permission denied")) is None
    assert limit_reason(RuntimeError("Unable to decode path")) is None


def test_stop_during_a_run_keeps_what_was_committed(tmp_path: Path) -> None:
    root = _tree(tmp_path, n=0)
    for i in range(300):
        (root / f"f{i:03d}.txt").write_text(f"note {i} about a copper engine\n")
    stop_at: list[threading.Event] = []

    class StopAfterFirstCommit:
        def __init__(self) -> None:
            self.indexing = False

        def phase(self, name: str, total: int | None) -> None:
            self.indexing = name == "indexing"

        def advance(self, n: int = 1) -> None:
            if self.indexing:
                stop_at[0].set()

        def warn(self, message: str) -> None:
            pass

    w = Watching(root, Script(), progress=StopAfterFirstCommit(), watch=WatchOptions())
    stop_at.append(w.stop_event)
    w.thread.join(DEADLINE_S)
    summary = w.stop()
    kept = indexed()
    assert summary.interrupted and summary.runs == 0
    assert 0 < len(kept) < 300
    # the next run resumes: everything indexed, what was committed unchanged
    index([root], options=IndexOptions(workers=0))
    after = indexed()
    assert len(after) == 300
    assert all(after[p] == h for p, h in kept.items())


def test_a_failing_run_is_reported_and_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xmr import watch as watch_module
    from xmr.errors import CatalogueError

    root = _tree(tmp_path)
    source = Script()
    real_index = watch_module.index
    failures = [CatalogueError("database is locked")]

    def flaky(*args: Any, **kwargs: Any) -> IndexReport:
        if kwargs["options"].within and failures:
            raise failures.pop()
        return real_index(*args, **kwargs)

    monkeypatch.setattr(watch_module, "index", flaky)
    w = Watching(root, source)
    w.wait_for(lambda: len(indexed()) == 3, "the first full run")
    make_text(root / "again.txt", seed=40)
    source.push(root / "again.txt")
    w.wait_for(lambda: str(root / "again.txt") in indexed(), "the file, on the second try")
    w.stop()
    assert len(w.listener.failures) == 1 and "database is locked" in w.listener.failures[0]


# -- the real watcher ----------------------------------------------------------------------------


def test_real_watcher_follows_create_modify_move_delete(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    w = Watching(root, None)
    w.wait_for(lambda: len(indexed()) == 3, "the first full run")
    make_text(root / "new.txt", seed=60)
    w.wait_for(lambda: str(root / "new.txt") in indexed(), "a new file")
    old = indexed()[str(root / "n0.txt")]
    make_text(root / "n0.txt", seed=61)
    w.wait_for(lambda: indexed().get(str(root / "n0.txt")) not in (None, old), "a modified file")
    h = indexed()[str(root / "n1.txt")]
    (root / "d").mkdir()
    os.rename(root / "n1.txt", root / "d" / "n1.txt")
    w.wait_for(lambda: indexed().get(str(root / "d" / "n1.txt")) == h and str(root / "n1.txt") not in indexed(), "move")
    (root / "n2.txt").unlink()
    w.wait_for(lambda: str(root / "n2.txt") not in indexed(), "a deleted file")
    summary = w.stop()
    assert not summary.polling and w.listener.notices == []


def test_background_watch_for_the_server(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    index_dir = tmp_path / "fresh-index"
    notices: list[str] = []
    bw = BackgroundWatch([root], index_dir, _settings(), notify=notices.append)
    assert paths.catalogue_path(index_dir).exists()  # made at once: the server opens it next
    bw.start()
    wait_for(lambda: len(indexed(index_dir)) == 3, "the first full run")
    make_text(root / "served.txt", seed=70)
    wait_for(lambda: any("1 change(s): 1 indexed" in n for n in notices), "the run's line")
    assert str(root / "served.txt") in indexed(index_dir)
    bw.close()
    assert not bw._thread.is_alive() and bw.error is None
    assert any(n.startswith("watching ") for n in notices)
    assert any("1 change(s): 1 indexed" in n for n in notices)


def _settings() -> Any:
    from xmr.settings import Settings

    return Settings.from_env()


def test_serve_watch_keeps_the_served_index_current(tmp_path: Path) -> None:
    from server_helpers import running_server

    root = _tree(tmp_path)
    index_dir = tmp_path / "served-index"  # fresh: the server starts before anything is indexed

    def top(server: Any, note: Path) -> str | None:
        reply = server.upload("file", note.name, note.read_bytes(), {"k": 1, "type": "text"})
        results = reply.json().get("results") if reply.status == 200 else None
        return results[0]["path"] if results else None

    with running_server(index_dir, "--watch", str(root)) as server:
        wait_for(lambda: top(server, root / "n1.txt") == str(root / "n1.txt"), "the first full run, served")
        make_text(root / "fresh.txt", seed=80)
        wait_for(lambda: top(server, root / "fresh.txt") == str(root / "fresh.txt"), "a new file, served")
        gone = (root / "n2.txt").read_bytes()
        (root / "n2.txt").unlink()
        (tmp_path / "n2-copy.txt").write_bytes(gone)
        wait_for(lambda: top(server, tmp_path / "n2-copy.txt") != str(root / "n2.txt"), "a deleted file, gone")
        proc = server.proc
    assert proc.returncode is not None  # running_server's SIGINT ended it, watch thread and all
