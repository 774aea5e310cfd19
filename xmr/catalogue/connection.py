"""The catalogue's SQLite connection: one place for its pragmas and transactions."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xmr import paths
from xmr.errors import write_failure


def connect(db_path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to a catalogue file with xmr's pragmas: the one place they are set.

    Autocommit (``transaction()`` opens each transaction explicitly), a 30 s wait on a
    busy database, foreign keys on; a writer also switches to WAL, so searches read while
    an indexer writes. Raises ``sqlite3.Error``.
    """
    if readonly:
        conn = _connect_readonly(db_path)
    else:
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA foreign_keys = ON")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _connect_readonly(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # reading a WAL database opens its -shm
    except sqlite3.OperationalError:
        conn.close()
        wal, shm = Path(f"{db_path}-wal"), Path(f"{db_path}-shm")
        if wal.exists() or shm.exists() or os.access(db_path.parent, os.W_OK):
            raise
        # A read-only folder, closed cleanly (no -wal, no -shm): SQLite cannot create the
        # -shm a WAL database is read through, and nothing can be writing there either, so
        # the file alone is the whole catalogue.
        conn = sqlite3.connect(f"file:{db_path}?mode=ro&immutable=1", uri=True, isolation_level=None, timeout=30)
    return conn


class CatalogueBase:
    """An open connection to one index's catalogue, and its transactions."""

    def __init__(self, index_dir: Path, conn: sqlite3.Connection, *, readonly: bool = False):
        self.index_dir = index_dir
        self.conn = conn
        self.readonly = readonly

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception.

        A full disk or a read-only catalogue becomes ``DiskFull`` / ``IndexReadOnly``
        (after the rollback), so the caller can stop cleanly: nothing earlier is lost.
        """
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as exc:
            # SQLite may already have rolled back by itself (SQLITE_FULL can do that); a rollback
            # that fails must not hide why: nothing uncommitted survives the connection anyway
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            mapped = write_failure(exc, paths.catalogue_path(self.index_dir), "committing to the catalogue")
            if mapped is not None:
                raise mapped from exc
            raise
