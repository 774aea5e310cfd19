"""The SQLite provenance catalogue: the source of truth for files and vectors.

Layout (see MIGRATIONS): ``files`` are paths on disk; what gets embedded is the
*content* (``files.hash``), so two paths with the same bytes share their
``segments`` and ``vectors`` and a renamed file keeps its vectors. ``encodings``
records that a content was fully embedded in a space by a model (also when it
yields no segment). ANN indexes are derived caches; their validity is checked
against the ``ann_state`` rows.

WAL mode lets searches read while an indexer writes; every change is made in a
short ``transaction()`` so an interrupted run keeps what it committed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from xmr import paths
from xmr.catalogue.concepts import ConceptVectors
from xmr.catalogue.connection import connect
from xmr.catalogue.files import FilesTable
from xmr.catalogue.keywords import KeywordTable
from xmr.catalogue.lookups import SearchLookups
from xmr.catalogue.meta import FileMetaTable
from xmr.catalogue.rows import FileRow, SegmentData, SegmentRef, fs_path, now_iso, path_key
from xmr.catalogue.runs import RunsAndReports
from xmr.catalogue.schema import MIGRATIONS, READABLE_FROM, SCHEMA_VERSION, migrate
from xmr.catalogue.vectors import VectorTables
from xmr.errors import CatalogueError, NoIndex, write_failure

__all__ = [
    "MIGRATIONS",
    "READABLE_FROM",
    "SCHEMA_VERSION",
    "Catalogue",
    "FileRow",
    "SegmentData",
    "SegmentRef",
    "fs_path",
    "now_iso",
    "path_key",
]


class Catalogue(
    FilesTable, RunsAndReports, VectorTables, SearchLookups, ConceptVectors, FileMetaTable, KeywordTable
):
    """An open catalogue. Not thread-safe; one per process (or per thread).

    One facade over the modules of this package, each a cohesive set of queries on the
    same connection (xmr.catalogue.connection)."""

    @classmethod
    def open(cls, index_dir: Path, *, create: bool = False, readonly: bool = False) -> Catalogue:
        db_path = paths.catalogue_path(index_dir)
        if not db_path.exists():
            if not create:
                raise NoIndex(
                    f"no index at {index_dir}",
                    hint="run 'xmr index PATH' first, or point --index / XMR_HOME at an existing index",
                )
            try:
                paths.make_private_dir(index_dir)
                # SQLite gives -wal and -shm the mode of the database file: create it 0600
                paths.create_private_file(db_path)
            except OSError as exc:
                raise write_failure(exc, index_dir, "creating the catalogue") or CatalogueError(
                    f"cannot create the catalogue: {exc.strerror}", path=index_dir
                ) from exc
        try:
            conn = connect(db_path, readonly=readonly)
            cat = cls(index_dir, conn, readonly=readonly)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise CatalogueError(f"cannot open catalogue: {exc}", path=db_path) from exc
        if version > SCHEMA_VERSION:
            raise CatalogueError(
                f"catalogue schema {version} is newer than this xmr understands ({SCHEMA_VERSION})",
                path=db_path,
                hint="upgrade xmr",
            )
        if version < SCHEMA_VERSION:
            if readonly and version >= READABLE_FROM:
                return cat
            if readonly:
                raise CatalogueError("catalogue needs a migration; run 'xmr index' once", path=db_path)
            cat.migrate()
        return cat

    def migrate(self) -> None:
        migrate(self)

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
