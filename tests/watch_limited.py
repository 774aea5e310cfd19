"""``python -m watch_limited ARGS``: the xmr CLI with OS file notifications failing as they
do once inotify's watches have run out (watchfiles raises this OSError), for the tests of the
polling fallback in a real process. Polling itself is watchfiles' own."""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterable

from xmr import watch
from xmr.cli import main

_real = watch.watchfiles_source


def _limited(options: watch.WatchOptions) -> watch.ChangeSource:
    real = _real(options)

    def source(roots: list[str], polling: bool, stop: threading.Event) -> Iterable[set[str]]:
        if not polling:
            raise OSError(errno.ENOSPC, "OS file watch limit reached. (Error { kind: MaxFilesWatch, paths: [] })")
        yield from real(roots, polling, stop)

    return source


watch.watchfiles_source = _limited

if __name__ == "__main__":
    main()
