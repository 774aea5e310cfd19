"""The catalogue's SQLite connection: one place for its pragmas and transactions."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xmr import paths
from xmr.errors import write_failure


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
