"""``xmr index --watch``: run xmr.watch until SIGINT or SIGTERM and render what it reports.

The first signal asks for a clean stop (a run in progress ends after its current
commit) and the command exits 0; a second Ctrl-C interrupts at once (exit 130).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xmr.indexer import IndexOptions, IndexReport, Progress
from xmr.settings import Settings
from xmr.watch import WatchOptions, run_line, watch_index


class _Render:
    """The watch loop's reports: one line per run on stderr, or one JSON object per run on stdout."""

    def __init__(self, console: Any, quiet: bool, json_out: bool):
        self.console, self.quiet, self.json_out = console, quiet, json_out

    def watching(self, roots: Sequence[str], polling: bool) -> None:
        how = "polling" if polling else "OS notifications"
        self._say(f"watching {len(roots)} path(s) for changes ({how}); Ctrl-C stops")

    def indexed(self, report: IndexReport, changes: int) -> None:
        if self.json_out:
            line = {"event": "run", "changes": changes, "run_id": report.run_id, **report.counts()}
            line["errors"] = report.errors
            sys.stdout.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
            sys.stdout.flush()
        else:
            self._say(f"{time.strftime('%H:%M:%S')} {run_line(report, changes)}")

    def fallback(self, notice: str) -> None:
        self._say(f"warning: {notice}")

    def failed(self, message: str) -> None:
        self._say(f"warning: {message}")

    def _say(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"xmr: {text}")


def run_watch(
    roots: Sequence[str | Path],
    *,
    index_dir: Path,
    settings: Settings,
    options: IndexOptions,
    watch: WatchOptions,
    progress: Progress,
    console: Any,
    quiet: bool,
    json_out: bool,
) -> None:
    stop = threading.Event()
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in handled}

    def on_signal(signum: int, frame: object) -> None:
        stop.set()
        for s in handled:  # a second signal acts as it would have without us
            signal.signal(s, previous[s])

    for s in handled:
        signal.signal(s, on_signal)
    try:
        summary = watch_index(
            [str(r) for r in roots],
            index_dir=index_dir,
            settings=settings,
            options=options,
            watch=watch,
            progress=progress,
            listener=_Render(console, quiet, json_out),
            stop=stop,
        )
    finally:
        for s in handled:
            signal.signal(s, previous[s])
    if not quiet:
        msg = f"xmr: stopped watching after {summary.runs} run(s): {summary.indexed} indexed, {summary.removed} removed"
        if summary.interrupted or summary.pending:
            msg += "; what changed last is indexed by the next run"
        console.print(msg)
