"""Watch mode: keep the index current while files change (``xmr index --watch``,
``xmr serve --watch``).

One full index run first; then the OS reports changes under the roots (watchfiles:
the Rust ``notify`` crate, inotify on Linux, FSEvents on macOS), and each group of
changes becomes one ordinary index run limited to the places that changed
(``IndexOptions.within``): a burst of 2,000 new files is a few runs, not 2,000, and
a change in a big tree does not walk the whole tree.

* Debounce: watchfiles holds a group of changes until ``step_ms`` pass without a new
  one, at most ``debounce_ms``; changes that arrive while a run works wait for the next
  run, which takes all of them.
* Fallback: when the OS refuses more watches (Linux's ``fs.inotify.max_user_watches``
  or ``max_user_instances``, "too many open files") the watch goes on by polling (a
  stat walk every ``poll_interval_s``), with one notice, after one full run that
  catches what changed meanwhile.
* Stopping: setting ``stop`` ends the loop. A run in progress stops at its next
  progress callback, after the commit it is in (the indexer's interrupt path: what was
  committed is kept, the rest stays for the next run, whose first full run finds it).
* The ANN checkpoint is written at most every ``checkpoint_interval_s`` (searches add
  the vectors committed since the last one from the catalogue).

Nothing here prints: the caller gets a :class:`WatchListener`'s callbacks and the
indexer's :class:`~xmr.indexer.Progress`.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from xmr import paths
from xmr.crawl import IGNORE_FILE
from xmr.errors import Interrupted, PathNotFound, UsageError, XmrError
from xmr.indexer import IndexOptions, IndexReport, Progress, _NoProgress, index
from xmr.settings import Settings

# (roots, polling, stop) -> sets of changed paths, an empty set now and then (the first as
# soon as the roots are watched), until ``stop`` is set; raises when it cannot watch
ChangeSource = Callable[[list[str], bool, threading.Event], Iterable[set[str]]]

SIBLINGS = 16  # more changed entries than this in one folder: look at the folder instead


@dataclass
class WatchOptions:
    debounce_ms: int = 1600  # longest a group of changes is held before a run (watchfiles' default)
    step_ms: int = 50  # quiet time that ends a group
    poll: bool = False  # poll from the start (network file systems, where OS notifications miss changes)
    poll_interval_s: float = 5.0  # polling: the stat walk's period
    max_places: int = 256  # changes in more separate places than this: one run over the whole roots
    checkpoint_interval_s: float = 120.0  # ANN checkpoint at most this often
    retry_s: float = 30.0  # a run that failed is tried again after this long (or at the next change)


@dataclass
class WatchSummary:
    runs: int = 0
    indexed: int = 0  # files embedded
    removed: int = 0
    failed: int = 0
    polling: bool = False
    interrupted: bool = False  # the stop came during a run: its committed batches are kept
    pending: int = 0  # changed paths noticed but not indexed when it stopped


class WatchListener(Protocol):
    """How the watch loop reports; the CLI renders it on stderr (and --json on stdout)."""

    def watching(self, roots: Sequence[str], polling: bool) -> None: ...

    def indexed(self, report: IndexReport, changes: int) -> None: ...  # changes: 0 for a full run

    def fallback(self, notice: str) -> None: ...  # once: OS notifications failed, polling from now on

    def failed(self, message: str) -> None: ...


class _Quiet:
    def watching(self, roots: Sequence[str], polling: bool) -> None:
        pass

    def indexed(self, report: IndexReport, changes: int) -> None:
        pass

    def fallback(self, notice: str) -> None:
        pass

    def failed(self, message: str) -> None:
        pass


class _Stop(KeyboardInterrupt):
    """Raised from a progress callback once ``stop`` is set: the indexer's interrupt path."""


class _Stoppable:
    """The caller's progress, stopping the run at its next callback once ``stop`` is set."""

    def __init__(self, inner: Progress, stop: threading.Event):
        self.inner, self.stop = inner, stop

    def phase(self, name: str, total: int | None) -> None:
        self._check()
        self.inner.phase(name, total)

    def advance(self, n: int = 1) -> None:
        self.inner.advance(n)
        self._check()

    def warn(self, message: str) -> None:
        self.inner.warn(message)

    def _check(self) -> None:
        if self.stop.is_set():
            raise _Stop


def watchfiles_source(options: WatchOptions) -> ChangeSource:
    """Changes from watchfiles (its own filters off: the crawler's rules decide)."""

    def changes(roots: list[str], polling: bool, stop: threading.Event, ignore_denied: bool) -> Iterator[set[str]]:
        from watchfiles import watch

        for found in watch(
            *roots,
            watch_filter=None,
            debounce=options.debounce_ms,
            step=options.step_ms,
            stop_event=stop,
            rust_timeout=500,
            yield_on_timeout=True,  # the first yield says the roots are watched
            raise_interrupt=False,
            # None: watchfiles' own choice (WATCHFILES_FORCE_POLLING, polling on WSL)
            force_polling=True if polling else None,
            poll_delay_ms=max(1, int(options.poll_interval_s * 1000)),
            ignore_permission_denied=ignore_denied,
        ):
            yield {path for _, path in found}

    def source(roots: list[str], polling: bool, stop: threading.Event) -> Iterator[set[str]]:
        # watchfiles' ignore_permission_denied drops every error of adding the watches, the
        # watch limit's too (a tree then is only partly watched, silently): off, unless an
        # unreadable folder is what stops it
        found = changes(roots, polling, stop, ignore_denied=polling)
        try:
            first = next(found)
        except PermissionError:
            found = changes(roots, polling, stop, ignore_denied=True)
            first = next(found)
        except StopIteration:
            return
        yield first
        yield from found

    return source


def limit_reason(exc: BaseException) -> str | None:
    """The OS's watch limit, when that is why the watcher failed. watchfiles raises OSError
    ("OS file watch limit reached.") when the first watches cannot be added,
    WatchfilesRustInternalError (a RuntimeError) with the same words when a folder created
    later cannot be watched, and "Too many open files" when no inotify instance is left."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EMFILE, errno.ENFILE):
        return text
    lowered = text.lower()
    if any(s in lowered for s in ("watch limit", "too many open files", "no space left on device", "os error 28")):
        return text
    return None


@dataclass
class _Fallback:
    reason: str
    limit: bool


@dataclass
class _Failure:
    exc: BaseException
    fatal: bool = True  # False: polling failed after it worked; it starts again after retry_s


_READY = object()


def watch_index(
    roots: Sequence[str | os.PathLike[str]],
    *,
    index_dir: Path | None = None,
    settings: Settings | None = None,
    options: IndexOptions | None = None,
    watch: WatchOptions | None = None,
    progress: Progress | None = None,
    listener: WatchListener | None = None,
    stop: threading.Event | None = None,
    source: ChangeSource | None = None,
) -> WatchSummary:
    """Index ``roots``, then keep indexing what changes under them until ``stop`` is set."""
    return _Watch(roots, index_dir, settings, options, watch, progress, listener, stop, source).run()


class _Watch:
    def __init__(
        self,
        roots: Sequence[str | os.PathLike[str]],
        index_dir: Path | None,
        settings: Settings | None,
        options: IndexOptions | None,
        watch: WatchOptions | None,
        progress: Progress | None,
        listener: WatchListener | None,
        stop: threading.Event | None,
        source: ChangeSource | None,
    ):
        if not roots:
            raise UsageError("give at least one folder or file to watch")
        self.roots = []
        for r in roots:
            p = os.path.abspath(os.path.expanduser(os.fspath(r)))
            if not os.path.lexists(p):
                raise PathNotFound("no such file or folder", path=r)
            self.roots.append(p)
        self.index_dir = index_dir or paths.index_dir()
        self.settings = settings or Settings.from_env()
        self.options = options or IndexOptions()
        self.watch = watch or WatchOptions()
        self.stop = stop or threading.Event()
        self.progress = _Stoppable(progress or _NoProgress(), self.stop)
        self.listener = listener or _Quiet()
        self.source = source or watchfiles_source(self.watch)
        self.events: queue.Queue[object] = queue.Queue()
        self.summary = WatchSummary(polling=self.watch.poll)
        self.pending: set[str] = set()
        self.full = False  # the next run covers the whole roots
        self.last_checkpoint = float("-inf")  # the first run writes one
        self.retry_at: float | None = None
        # the index's own writes must never look like changes (an index inside a watched folder)
        self._skip = {os.path.abspath(self.index_dir), os.path.realpath(self.index_dir)}

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> WatchSummary:
        producer = threading.Thread(target=self._produce, name="xmr-watch", daemon=True)
        producer.start()
        try:
            if not self._wait_ready():
                return self.summary
            self.listener.watching(self.roots, self.summary.polling)
            self.full = True  # the first run: everything that changed while nothing watched
            while not self.stop.is_set():
                due = self.retry_at is None or time.monotonic() >= self.retry_at  # after a failed run
                if (self.full or self.pending) and due:
                    self._run_once()
                    continue
                self._take(block=True)
            return self.summary
        finally:
            self.stop.set()
            producer.join(timeout=10)
            self.summary.pending = len(self.pending)

    def _wait_ready(self) -> bool:
        """Until the roots are watched (changes from then on are not missed), or ``stop``."""
        while not self.stop.is_set():
            try:
                item = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is _READY:
                return True
            self._handle(item)
        return False

    def _take(self, *, block: bool) -> None:
        """Move the changes reported so far into ``pending`` (waiting a little for one if ``block``)."""
        try:
            item = self.events.get(timeout=0.2) if block else self.events.get_nowait()
        except queue.Empty:
            return
        self._handle(item)
        while True:
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle(item)

    def _handle(self, item: object) -> None:
        if isinstance(item, set):
            fresh = {p for p in (self._relevant(path) for path in item) if p is not None}
            if fresh - self.pending:
                self.retry_at = None  # a new change: a failed run is tried again with it
            self.pending |= fresh
        elif isinstance(item, _Fallback):
            self.summary.polling = True
            self.full = True  # what changed between the failure and the first poll
            self.listener.fallback(fallback_notice(item.reason, item.limit, self.watch.poll_interval_s))
        elif isinstance(item, _Failure):
            if not item.fatal:
                self.full = True  # changes while it was down
                self.listener.failed(f"polling failed ({item.exc}); trying again in {self.watch.retry_s:g} s")
                return
            if isinstance(item.exc, FileNotFoundError):
                raise PathNotFound(f"a watched folder is gone: {item.exc}") from None
            raise XmrError(f"cannot watch the folders: {item.exc}") from item.exc

    def _run_once(self) -> None:
        self._take(block=False)
        changes = len(self.pending)
        within = [] if self.full else coalesce(self.pending, self.roots, self.watch.max_places)
        taken, full = set(self.pending), self.full
        self.pending.clear()
        self.full = False
        now = time.monotonic()
        checkpoint = now - self.last_checkpoint >= self.watch.checkpoint_interval_s
        options = replace(
            self.options,
            within=within,
            checkpoint_ann=checkpoint and self.options.checkpoint_ann,
            wait=self.options.wait or self.summary.runs > 0,  # later runs wait for another writer
        )
        try:
            report = index(
                self.roots, index_dir=self.index_dir, settings=self.settings, options=options, progress=self.progress
            )
        except (Interrupted, _Stop):
            if not self.stop.is_set():
                raise
            self.summary.interrupted = True
            self.pending |= taken
            self.full = self.full or full
            return
        except PathNotFound:
            raise  # a watched root is gone
        except XmrError as exc:
            if self.summary.runs == 0 and full:
                raise  # the first run fails as a plain `xmr index` would
            self.listener.failed(f"{exc}; trying again at the next change or in {self.watch.retry_s:g} s")
            self.pending |= taken
            self.full = self.full or full
            self.retry_at = time.monotonic() + self.watch.retry_s
            return
        self.retry_at = None
        if checkpoint:
            self.last_checkpoint = now
        self.summary.runs += 1
        self.summary.indexed += report.embedded_files
        self.summary.removed += report.removed
        self.summary.failed += report.failed
        self.listener.indexed(report, 0 if full else changes)

    def _relevant(self, path: str) -> str | None:
        """The place a reported change asks to look at, or None (the index itself, a hidden
        name, outside the roots). A changed ``.xmrignore`` asks for its folder."""
        p = os.path.abspath(path)
        if any(p == s or p.startswith(s + os.sep) for s in self._skip):
            return None
        root = _root_of(p, self.roots)
        if root is None:
            return None
        if os.path.basename(p) == IGNORE_FILE and p != root:
            p = os.path.dirname(p)
        if not self.options.include_hidden and p != root:
            rel = os.path.relpath(p, root)
            if any(part.startswith(".") for part in rel.split(os.sep)):
                return None
        return p

    # -- the watcher thread -----------------------------------------------------------------
    def _produce(self) -> None:
        polling = self.watch.poll
        ready = False
        while not self.stop.is_set():
            try:
                for changes in self.source(list(self.roots), polling, self.stop):
                    if not ready:
                        ready = True
                        self.events.put(_READY)
                    if changes:
                        self.events.put(changes)
                return  # a source ends when ``stop`` is set
            except (OSError, RuntimeError) as exc:
                # a root gone (older watchfiles raised FileNotFoundError for every watch error)
                if isinstance(exc, FileNotFoundError) and limit_reason(exc) is None:
                    self.events.put(_Failure(exc))
                    return
                if not polling:
                    limit = limit_reason(exc)
                    self.events.put(_Fallback(limit or f"{type(exc).__name__}: {exc}", limit is not None))
                    polling = True
                    continue
                if not ready:
                    self.events.put(_Failure(exc))  # cannot watch at all
                    return
                self.events.put(_Failure(exc, fatal=False))
                self.stop.wait(self.watch.retry_s)
            except Exception as exc:  # anything else ends the watch with its message, never silently
                self.events.put(_Failure(exc))
                return


def _root_of(path: str, roots: Sequence[str]) -> str | None:
    best = None
    for r in roots:
        if (path == r or path.startswith(r.rstrip(os.sep) + os.sep)) and (best is None or len(r) > len(best)):
            best = r
    return best


def coalesce(changed: Iterable[str], roots: Sequence[str], limit: int) -> list[str]:
    """The places a run looks at for these changed paths: the paths themselves, a folder
    instead of more than ``SIBLINGS`` of its entries, nothing below a place already taken.
    ``[]`` (the whole roots) when more than ``limit`` places remain."""
    by_folder: dict[str, set[str]] = {}
    for p in changed:
        by_folder.setdefault(os.path.dirname(p), set()).add(p)
    places: set[str] = set()
    for folder, entries in by_folder.items():
        if len(entries) > SIBLINGS and _root_of(folder, roots) is not None:
            places.add(folder)
        else:
            places |= entries
    kept = []
    for p in sorted(places):
        parent, up = p, os.path.dirname(p)
        while up != parent and up not in places:
            parent, up = up, os.path.dirname(up)
        if up == parent:  # reached the top without meeting another place
            kept.append(p)
    return [] if len(kept) > limit else kept


class BackgroundWatch:
    """``watch_index`` on a thread, for ``xmr serve --watch``: its messages go to ``notify``
    (one line each) and it ends with :meth:`close`. The server picks up each run's commits
    by itself (xmr.server.state: the catalogue's generation)."""

    def __init__(
        self,
        roots: Sequence[str | os.PathLike[str]],
        index_dir: Path,
        settings: Settings,
        *,
        options: IndexOptions | None = None,
        watch: WatchOptions | None = None,
        notify: Callable[[str], None] | None = None,
    ):
        from xmr.catalogue import Catalogue

        self.notify = notify or (lambda message: None)
        self.stop = threading.Event()
        self.error: XmrError | None = None
        self._watch = _Watch(roots, index_dir, settings, options, watch, None, _Notices(self.notify), self.stop, None)
        if not paths.catalogue_path(index_dir).exists():
            Catalogue.open(index_dir, create=True).close()  # the server opens it before the first run ends
        self._thread = threading.Thread(target=self._run, name="xmr-watch-index", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self._watch.run()
        except XmrError as exc:
            self.error = exc
            self.notify(f"watching stopped: {exc}")

    def close(self, timeout: float = 120.0) -> None:
        """Stop (a run in progress ends after its current commit) and wait for the thread."""
        self.stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


class _Notices:
    """A WatchListener for the server: one line per event."""

    def __init__(self, notify: Callable[[str], None]):
        self.notify = notify

    def watching(self, roots: Sequence[str], polling: bool) -> None:
        how = "polling" if polling else "OS notifications"
        self.notify(f"watching {', '.join(roots)} ({how})")

    def indexed(self, report: IndexReport, changes: int) -> None:
        self.notify(run_line(report, changes))

    def fallback(self, notice: str) -> None:
        self.notify(notice)

    def failed(self, message: str) -> None:
        self.notify(message)


def run_line(report: IndexReport, changes: int) -> str:
    """One line for a watch run (the CLI and the server say the same)."""
    what = f"{changes} change(s)" if changes else "full scan"
    parts = [f"{report.embedded_files} indexed", f"{report.moved} moved", f"{report.removed} removed"]
    if report.duplicates:
        parts.append(f"{report.duplicates} duplicate")
    if report.failed:
        parts.append(f"{report.failed} failed")
    return f"{what}: {', '.join(parts)} in {report.elapsed_s:.1f}s"


def fallback_notice(reason: str, limit: bool, interval_s: float) -> str:
    text = f"cannot watch with OS notifications ({reason.strip()}); polling every {interval_s:g} s instead"
    if limit:
        text += (
            ". On Linux, raise the limit: sudo sysctl fs.inotify.max_user_watches=524288"
            " (and fs.inotify.max_user_instances=512); see docs/watch.md"
        )
    return text
