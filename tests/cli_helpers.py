"""Shared helpers for the CLI tests."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from xmr import paths
from xmr.cli import app


def invoke(*args: str, input: str | None = None) -> Result:
    """Run the CLI in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def committed_files(db: Path) -> set[str]:
    """Paths of the files indexed so far, read the way any other process would."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return {p for (p,) in con.execute("SELECT path FROM files WHERE status = 'indexed'")}
        finally:
            con.close()
    except sqlite3.OperationalError:  # not created, or created but not migrated yet
        return set()


def start_slow_index(
    args: list[str], *, delay: float, min_committed: int = 100, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start ``python -m xmr index ARGS`` slowed by the test encoders (``delay`` s per item) and
    return once it has committed ``min_committed`` files (or ended, or 120 s passed)."""
    db = paths.catalogue_path(paths.index_dir())
    env = dict(os.environ, FAKE_ENCODER_DELAY=str(delay))
    proc = subprocess.Popen([sys.executable, "-m", "xmr", "index", *args], env=env, stderr=subprocess.PIPE, **popen)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(committed_files(db)) < min_committed:
        time.sleep(0.02)
    return proc
