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

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from xmr import __version__, paths
from xmr.errors import CatalogueError, NoIndex, write_failure

# Numbered migrations; each runs in one transaction with PRAGMA user_version.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE files (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,      -- absolute, undecodable bytes backslash-escaped
            path_bytes BLOB,                -- the raw file-system name when it is not valid UTF-8
            root TEXT NOT NULL,             -- the indexed root it was found under
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            hash TEXT,                      -- blake2b-128 of the content
            modality TEXT,                  -- image|audio|text|other (NULL: unreadable)
            status TEXT NOT NULL,           -- pending|indexed|skipped|error
            error TEXT,                     -- why: the error, or the reason a file is skipped
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            run_id INTEGER
        );
        CREATE INDEX files_hash ON files(hash);
        CREATE INDEX files_status ON files(status);
        CREATE TABLE models (
            id TEXT PRIMARY KEY,
            space TEXT NOT NULL,
            spec TEXT,                      -- what the user configured (to reload it for queries)
            name TEXT,
            pretrained TEXT,
            checkpoint_sha256 TEXT,
            dim INTEGER NOT NULL,
            preprocessing TEXT,             -- JSON
            created TEXT NOT NULL
        );
        CREATE TABLE segments (
            id INTEGER PRIMARY KEY,
            hash TEXT NOT NULL,
            space TEXT NOT NULL,
            model_id TEXT NOT NULL REFERENCES models(id),
            kind TEXT NOT NULL,             -- image|audio_window|text_passage
            seq INTEGER NOT NULL,
            start_s REAL,
            end_s REAL,
            char_start INTEGER,
            char_end INTEGER,
            text TEXT
        );
        CREATE INDEX segments_hash ON segments(hash, space, model_id);
        CREATE TABLE vectors (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the ANN label: never reused, or a stale ANN file
                                                   -- would answer for a vector that is gone
            segment_id INTEGER NOT NULL UNIQUE REFERENCES segments(id) ON DELETE CASCADE,
            space TEXT NOT NULL,
            model_id TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL            -- float32, little-endian
        );
        CREATE INDEX vectors_space ON vectors(space, model_id, id);
        CREATE TABLE encodings (
            hash TEXT NOT NULL,
            space TEXT NOT NULL,
            model_id TEXT NOT NULL,
            n_segments INTEGER NOT NULL,
            created TEXT NOT NULL,
            PRIMARY KEY (hash, space, model_id)
        );
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            command TEXT NOT NULL,
            started TEXT NOT NULL,
            finished TEXT,
            status TEXT NOT NULL,           -- running|completed|interrupted|failed
            arguments TEXT,                 -- JSON
            counts TEXT,                    -- JSON
            xmr_version TEXT NOT NULL
        );
        CREATE TABLE ann_state (
            space TEXT NOT NULL,
            model_id TEXT NOT NULL,
            state TEXT NOT NULL,            -- JSON, owned by xmr.vectorstore
            updated TEXT NOT NULL,
            PRIMARY KEY (space, model_id)
        );
        CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT
        );
        """,
    ),
    (
        2,
        """
        CREATE TABLE concepts (
            model_id TEXT NOT NULL,
            concept TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,           -- float32 text embedding of the concept in that model's space
            PRIMARY KEY (model_id, concept)
        );
        """,
    ),
    (
        3,
        """
        -- vectors per (space, model), kept by triggers (cascaded deletes included), so a search
        -- learns counts and the catalogue's generation in O(1) instead of counting rows
        CREATE TABLE vector_counts (
            space TEXT NOT NULL,
            model_id TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (space, model_id)
        );
        INSERT INTO vector_counts (space, model_id, n) SELECT space, model_id, COUNT(*) FROM vectors GROUP BY 1, 2;
        CREATE TRIGGER vectors_counted_insert AFTER INSERT ON vectors BEGIN
            INSERT INTO vector_counts (space, model_id, n) VALUES (NEW.space, NEW.model_id, 1)
                ON CONFLICT (space, model_id) DO UPDATE SET n = n + 1;
        END;
        CREATE TRIGGER vectors_counted_delete AFTER DELETE ON vectors BEGIN
            UPDATE vector_counts SET n = n - 1 WHERE space = OLD.space AND model_id = OLD.model_id;
        END;
        """,
    ),
    (
        4,
        """
        -- documents: the PDF page of a passage, and how many passages the junk guard dropped
        ALTER TABLE segments ADD COLUMN page INTEGER;
        ALTER TABLE encodings ADD COLUMN n_dropped INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        5,
        """
        -- a search's per-kind id lists and counts read this index alone, not rows that hold
        -- the vectors themselves (2 KB each): about 3x faster per group at 100k vectors
        CREATE INDEX vectors_group ON vectors(space, model_id, segment_id);
        """,
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
# a reader (search, which never migrates) accepts catalogues from this version on: the
# migrations after it add indexes only, which make reading faster but are not needed
READABLE_FROM = 4


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def path_key(path: str | os.PathLike[str]) -> tuple[str, bytes | None]:
    """The catalogue key of a path and, for names that are not UTF-8, their raw bytes.

    SQLite text must be valid UTF-8; Linux names need not be. Such names are
    stored escaped for display and lookup, with the exact bytes kept aside.
    """
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text, None
    except UnicodeEncodeError:
        raw = os.fsencode(text)
        return raw.decode("utf-8", "backslashreplace"), raw


def fs_path(path: str, path_bytes: bytes | None) -> str:
    """Back from a catalogue row to a name the OS understands."""
    return os.fsdecode(path_bytes) if path_bytes is not None else path


@dataclass
class FileRow:
    id: int
    path: str
    path_bytes: bytes | None
    size: int
    mtime_ns: int
    hash: str | None
    modality: str | None
    status: str
    root: str | None = None

    @property
    def fs_path(self) -> str:
        return fs_path(self.path, self.path_bytes)


@dataclass
class SegmentData:
    """One thing that gets a vector: a whole image, an audio window, a text passage."""

    kind: str
    start_s: float | None = None
    end_s: float | None = None
    char_start: int | None = None
    char_end: int | None = None
    text: str | None = None  # stored only with --store-snippets; otherwise read from the file when shown
    page: int | None = None  # PDF page, from 1


def _under_clause(column: str, root: str) -> tuple[str, list[str]]:
    """SQL for 'column is root or below it' without LIKE (paths may contain % or _)."""
    root = path_key(root)[0].rstrip("/") or "/"
    if root == "/":
        return f"{column} >= '/'", []
    return f"({column} = ? OR ({column} >= ? AND {column} < ?))", [root, root + "/", root + "0"]


def _under_any(column: str, roots: Sequence[str]) -> tuple[str, list[str]]:
    """SQL for 'column is at or below any of roots'."""
    clauses, params = [], []
    for root in roots:
        clause, p = _under_clause(column, root)
        clauses.append(clause)
        params.extend(p)
    return "(" + " OR ".join(clauses) + ")", params


class Catalogue:
    """An open catalogue. Not thread-safe; one per process (or per thread)."""

    def __init__(self, index_dir: Path, conn: sqlite3.Connection, *, readonly: bool = False):
        self.index_dir = index_dir
        self.conn = conn
        self.readonly = readonly

    # -- opening -----------------------------------------------------------------
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
            if readonly:
                conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None, timeout=30)
            else:
                conn = sqlite3.connect(db_path, isolation_level=None, timeout=30)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
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
        for number, sql in MIGRATIONS:
            with self.transaction():
                current = self.conn.execute("PRAGMA user_version").fetchone()[0]
                if current >= number:
                    continue
                for statement in _statements(sql):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {int(number)}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    # -- settings & models ----------------------------------------------------------
    def get_setting(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_setting(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

    def ensure_model(self, info: Any, spec: str | None) -> None:
        """Record a model (xmr.encoders.base.ModelInfo); call inside a transaction."""
        self.conn.execute(
            "INSERT OR IGNORE INTO models (id, space, spec, name, pretrained, checkpoint_sha256, dim,"
            " preprocessing, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                info.model_id,
                info.space,
                spec,
                info.name,
                info.pretrained,
                info.checkpoint_sha256,
                info.dim,
                json.dumps(info.preprocessing, sort_keys=True, default=str),
                now_iso(),
            ),
        )

    def active_model(self, space: str) -> str | None:
        return self.get_setting(f"active_model.{space}")

    def model_row(self, model_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()
        if row is None:
            return None
        cols = [d[0] for d in self.conn.execute("SELECT * FROM models LIMIT 0").description]
        out = dict(zip(cols, row, strict=True))
        out["preprocessing"] = json.loads(out["preprocessing"] or "{}")
        return out

    def models(self) -> list[dict[str, Any]]:
        ids = [r[0] for r in self.conn.execute("SELECT id FROM models ORDER BY space, created")]
        out = []
        for model_id in ids:
            row = self.model_row(model_id)
            assert row is not None
            row["active"] = self.active_model(row["space"]) == model_id
            row["vectors"] = self.conn.execute(
                "SELECT COUNT(*) FROM vectors WHERE model_id = ?", (model_id,)
            ).fetchone()[0]
            out.append(row)
        return out

    # -- files ---------------------------------------------------------------------------
    def files_under(self, root: str) -> dict[str, FileRow]:
        clause, params = _under_clause("path", root)
        rows = self.conn.execute(
            "SELECT id, path, path_bytes, size, mtime_ns, hash, modality, status, root FROM files WHERE " + clause,
            params,
        )
        return {r[1]: FileRow(*r) for r in rows}

    def file_by_path(self, path: str) -> FileRow | None:
        key, _ = path_key(path)
        r = self.conn.execute(
            "SELECT id, path, path_bytes, size, mtime_ns, hash, modality, status FROM files WHERE path = ?",
            (key,),
        ).fetchone()
        return FileRow(*r) if r else None

    def upsert_file(
        self,
        path: str,
        *,
        root: str,
        size: int,
        mtime_ns: int,
        hash: str | None,
        modality: str | None,
        status: str,
        error: str | None,
        run_id: int | None,
        seen: str,
    ) -> tuple[int, str | None]:
        """Insert or update a file row; returns (id, previous hash)."""
        key, raw = path_key(path)
        root = path_key(root)[0]
        old = self.conn.execute("SELECT id, hash FROM files WHERE path = ?", (key,)).fetchone()
        if old is None:
            cur = self.conn.execute(
                "INSERT INTO files (path, path_bytes, root, size, mtime_ns, hash, modality, status, error,"
                " first_seen, last_seen, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, raw, root, size, mtime_ns, hash, modality, status, error, seen, seen, run_id),
            )
            return int(cur.lastrowid), None
        self.conn.execute(
            "UPDATE files SET root = ?, size = ?, mtime_ns = ?, hash = ?, modality = ?, status = ?, error = ?,"
            " last_seen = ?, run_id = ? WHERE id = ?",
            (root, size, mtime_ns, hash, modality, status, error, seen, run_id, old[0]),
        )
        return int(old[0]), old[1]

    def touch_files(self, ids: Sequence[int], seen: str, run_id: int | None) -> None:
        self.conn.executemany(
            "UPDATE files SET last_seen = ?, run_id = ? WHERE id = ?", ((seen, run_id, i) for i in ids)
        )

    def set_status(self, file_ids: Sequence[int], status: str, error: str | None = None) -> None:
        self.conn.executemany(
            "UPDATE files SET status = ?, error = ? WHERE id = ?", ((status, error, i) for i in file_ids)
        )

    def delete_files(self, ids: Sequence[int]) -> int:
        """Delete file rows and any content no other file still refers to."""
        hashes: set[str] = set()
        for chunk in _chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            hashes.update(h for (h,) in self.conn.execute(f"SELECT hash FROM files WHERE id IN ({marks})", chunk) if h)
            self.conn.execute(f"DELETE FROM files WHERE id IN ({marks})", chunk)
        self.gc_contents(hashes)
        return len(ids)

    def gc_contents(self, hashes: Iterable[str]) -> int:
        """Drop segments, vectors and encodings of contents no file refers to any more."""
        dropped = 0
        for h in hashes:
            if self.conn.execute("SELECT 1 FROM files WHERE hash = ? LIMIT 1", (h,)).fetchone():
                continue
            self.drop_content(h)
            dropped += 1
        return dropped

    def drop_content(self, h: str, *, space: str | None = None, keep_model: str | None = None) -> None:
        where, params = "hash = ?", [h]
        if space is not None:
            where += " AND space = ?"
            params.append(space)
        if keep_model is not None:
            where += " AND model_id != ?"
            params.append(keep_model)
        self.conn.execute(f"DELETE FROM vectors WHERE segment_id IN (SELECT id FROM segments WHERE {where})", params)
        self.conn.execute(f"DELETE FROM segments WHERE {where}", params)
        self.conn.execute(f"DELETE FROM encodings WHERE {where}", params)

    def encoded_spaces(self, h: str, models: dict[str, str]) -> set[str]:
        """Spaces in which content ``h`` is already embedded by the given model per space."""
        rows = self.conn.execute("SELECT space, model_id FROM encodings WHERE hash = ?", (h,))
        return {space for space, model_id in rows if models.get(space) == model_id}

    def add_encoding(
        self,
        h: str,
        space: str,
        model_id: str,
        segments: Sequence[SegmentData],
        vectors: np.ndarray,
        dropped: int = 0,
    ) -> None:
        """Store one content's segments and vectors for a space; call inside a transaction.

        Replaces whatever that content had in the space (older models included),
        so a re-embed or a model switch never leaves two generations behind.
        """
        if len(segments) != len(vectors):
            raise ValueError("one vector per segment")
        self.drop_content(h, space=space)
        vecs = np.ascontiguousarray(vectors, dtype="<f4")
        dim = int(vecs.shape[1]) if vecs.ndim == 2 else 0
        for seq, (seg, vec) in enumerate(zip(segments, vecs, strict=True)):
            cur = self.conn.execute(
                "INSERT INTO segments (hash, space, model_id, kind, seq, start_s, end_s, char_start, char_end,"
                " text, page) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    h,
                    space,
                    model_id,
                    seg.kind,
                    seq,
                    seg.start_s,
                    seg.end_s,
                    seg.char_start,
                    seg.char_end,
                    seg.text,
                    seg.page,
                ),
            )
            self.conn.execute(
                "INSERT INTO vectors (segment_id, space, model_id, dim, vector) VALUES (?, ?, ?, ?, ?)",
                (cur.lastrowid, space, model_id, dim, vec.tobytes()),
            )
        self.conn.execute(
            "INSERT INTO encodings (hash, space, model_id, n_segments, created, n_dropped) VALUES (?, ?, ?, ?, ?, ?)",
            (h, space, model_id, len(segments), now_iso(), dropped),
        )

    # -- runs ----------------------------------------------------------------------------
    def start_run(self, command: str, arguments: dict[str, Any]) -> int:
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO runs (command, started, status, arguments, xmr_version) VALUES (?, ?, ?, ?, ?)",
                (command, now_iso(), "running", json.dumps(arguments, default=str), __version__),
            )
        return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str, counts: dict[str, Any]) -> None:
        with self.transaction():
            self.conn.execute(
                "UPDATE runs SET finished = ?, status = ?, counts = ? WHERE id = ?",
                (now_iso(), status, json.dumps(counts, default=str), run_id),
            )

    def last_run(self, command: str | None = None) -> dict[str, Any] | None:
        sql = "SELECT id, command, started, finished, status, arguments, counts, xmr_version FROM runs"
        params: list[Any] = []
        if command:
            sql += " WHERE command = ?"
            params.append(command)
        r = self.conn.execute(sql + " ORDER BY id DESC LIMIT 1", params).fetchone()
        if r is None:
            return None
        keys = ("id", "command", "started", "finished", "status", "arguments", "counts", "xmr_version")
        out = dict(zip(keys, r, strict=True))
        out["arguments"] = json.loads(out["arguments"] or "{}")
        out["counts"] = json.loads(out["counts"] or "{}")
        return out

    # -- reports -------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        q = self.conn.execute
        files_by = {
            f"{m or 'unreadable'}": n
            for m, n in q("SELECT modality, COUNT(*) FROM files GROUP BY modality ORDER BY modality")
        }
        status_by = {s: n for s, n in q("SELECT status, COUNT(*) FROM files GROUP BY status ORDER BY status")}
        skipped_by = {
            r: n
            for r, n in q(
                "SELECT error, COUNT(*) FROM files WHERE status = 'skipped' AND error IS NOT NULL"
                " GROUP BY error ORDER BY COUNT(*) DESC, error"
            )
        }
        spaces = []
        for space, model_id, n_vec in q(
            "SELECT space, model_id, COUNT(*) FROM vectors GROUP BY space, model_id ORDER BY space, model_id"
        ).fetchall():
            by_kind = {
                k: n
                for k, n in q(
                    "SELECT kind, COUNT(*) FROM segments WHERE space = ? AND model_id = ? GROUP BY kind",
                    (space, model_id),
                )
            }
            spaces.append(
                {
                    "space": space,
                    "model_id": model_id,
                    "active": self.active_model(space) == model_id,
                    "vectors": n_vec,
                    "segments_by_kind": by_kind,
                }
            )
        db_path = paths.catalogue_path(self.index_dir)
        size = sum(p.stat().st_size for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")) if p.exists())
        return {
            "files": sum(files_by.values()),
            "files_by_modality": files_by,
            "files_by_status": status_by,
            "skipped_by_reason": skipped_by,
            "spaces": spaces,
            "catalogue_bytes": size,
        }

    def errors(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT path, modality, error, last_seen FROM files WHERE status = 'error' ORDER BY path"
        )
        return [{"path": p, "modality": m, "error": e, "last_seen": s} for p, m, e, s in rows]

    def file_info(self, path: str) -> dict[str, Any] | None:
        key, _ = path_key(path)
        cols = "id, path, root, size, mtime_ns, hash, modality, status, error, first_seen, last_seen, run_id"
        r = self.conn.execute(f"SELECT {cols} FROM files WHERE path = ?", (key,)).fetchone()
        if r is None:
            return None
        info = dict(zip([c.strip() for c in cols.split(",")], r, strict=True))
        info["duplicates"] = (
            [
                p
                for (p,) in self.conn.execute(
                    "SELECT path FROM files WHERE hash = ? AND id != ? ORDER BY path",
                    (info["hash"], info["id"]),
                )
            ]
            if info["hash"]
            else []
        )
        encodings = []
        for space, model_id, n, created, dropped in self.conn.execute(
            "SELECT space, model_id, n_segments, created, n_dropped FROM encodings WHERE hash = ? ORDER BY space",
            (info["hash"],),
        ).fetchall():
            segs = [
                {
                    "segment_id": sid,
                    "kind": kind,
                    "seq": seq,
                    "start_s": s0,
                    "end_s": s1,
                    "char_start": c0,
                    "char_end": c1,
                    "page": page,
                    "vector_id": vid,
                    "dim": dim,
                }
                for sid, kind, seq, s0, s1, c0, c1, page, vid, dim in self.conn.execute(
                    "SELECT s.id, s.kind, s.seq, s.start_s, s.end_s, s.char_start, s.char_end, s.page, v.id, v.dim"
                    " FROM segments s LEFT JOIN vectors v ON v.segment_id = s.id"
                    " WHERE s.hash = ? AND s.space = ? AND s.model_id = ? ORDER BY s.seq",
                    (info["hash"], space, model_id),
                )
            ]
            encodings.append(
                {
                    "space": space,
                    "model": self.model_row(model_id),
                    "n_segments": n,
                    "dropped_as_junk": dropped,
                    "embedded_at": created,
                    "segments": segs,
                }
            )
        info["encodings"] = encodings
        return info

    def integrity_check(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]

    # -- xmr.vectorstore.VectorSource ------------------------------------------------------
    def vector_count(self, space: str, model_id: str) -> int:
        r = self.conn.execute(
            "SELECT n FROM vector_counts WHERE space = ? AND model_id = ?", (space, model_id)
        ).fetchone()
        return int(r[0]) if r else 0

    def generation(self) -> tuple[int, int]:
        """(vectors, highest vector id ever assigned): changes with every insert and every delete,
        since ids are never reused. What derived caches of the vectors are keyed by."""
        n = self.conn.execute("SELECT COALESCE(SUM(n), 0) FROM vector_counts").fetchone()[0]
        return int(n), self.max_vector_id("", "")

    def max_vector_id(self, space: str, model_id: str) -> int:
        """The highest vector id ever assigned (all spaces): never decreases, even when the
        newest vectors are deleted, so the ANN cache can tell new vectors from old ones."""
        r = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'vectors'").fetchone()
        return int(r[0]) if r else 0

    def iter_vectors(
        self, space: str, model_id: str, *, after_id: int = 0, batch: int = 20000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        last = after_id
        while True:
            rows = self.conn.execute(
                "SELECT id, dim, vector FROM vectors WHERE space = ? AND model_id = ? AND id > ? ORDER BY id LIMIT ?",
                (space, model_id, last, batch),
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            dim = rows[0][1]
            vecs = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), dim)
            yield ids, vecs.astype(np.float32, copy=False)
            last = int(ids[-1])

    def live_vector_ids(self, space: str, model_id: str) -> np.ndarray:
        rows = self.conn.execute(
            "SELECT id FROM vectors WHERE space = ? AND model_id = ? ORDER BY id", (space, model_id)
        ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def get_ann_state(self, space: str, model_id: str) -> dict[str, Any] | None:
        r = self.conn.execute(
            "SELECT state FROM ann_state WHERE space = ? AND model_id = ?", (space, model_id)
        ).fetchone()
        return json.loads(r[0]) if r else None

    def put_ann_state(self, space: str, model_id: str, state: dict[str, Any]) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT OR REPLACE INTO ann_state (space, model_id, state, updated) VALUES (?, ?, ?, ?)",
                (space, model_id, json.dumps(state, sort_keys=True), now_iso()),
            )

    # -- search support ------------------------------------------------------------------
    def group_vector_ids(self, space: str, model_id: str, kind: str, *, under: Sequence[str] = ()) -> np.ndarray:
        """Vector ids of one segment kind in a space, optionally only for files under some folders."""
        sql = (
            "SELECT v.id FROM vectors v JOIN segments s ON s.id = v.segment_id"
            " WHERE v.space = ? AND v.model_id = ? AND s.kind = ?"
        )
        params: list[Any] = [space, model_id, kind]
        if under:
            clause, p = _under_any("f.path", under)
            sql += f" AND s.hash IN (SELECT f.hash FROM files f WHERE {clause})"
            params.extend(p)
        # sorted here, not by ORDER BY, which would make SQLite walk vectors_space and read each row
        rows = self.conn.execute(sql, params).fetchall()
        return np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))

    def segments_for_vectors(self, ids: Sequence[int]) -> dict[int, SegmentRef]:
        out: dict[int, SegmentRef] = {}
        for chunk in _chunks([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                "SELECT v.id, s.id, s.hash, s.space, s.model_id, s.kind, s.seq, s.start_s, s.end_s, s.char_start,"
                f" s.char_end, s.text, s.page FROM vectors v JOIN segments s ON s.id = v.segment_id"
                f" WHERE v.id IN ({marks})",
                chunk,
            ):
                out[int(row[0])] = SegmentRef(*row)
        return out

    def files_for_hashes(
        self, hashes: Iterable[str], *, under: Sequence[str] = ()
    ) -> dict[str, list[tuple[str, str, bytes | None]]]:
        """hash -> [(path, modality, raw path bytes or None)] of indexed files holding that content."""
        out: dict[str, list[tuple[str, str, bytes | None]]] = {}
        for chunk in _chunks(list(set(hashes)), 500):
            marks = ",".join("?" * len(chunk))
            # "+status": without it SQLite walks files_status, every indexed row (28 ms at 100k files
            # per search), instead of looking the few hashes up in files_hash
            sql = f"SELECT hash, path, modality, path_bytes FROM files WHERE +status = 'indexed' AND hash IN ({marks})"
            params: list[Any] = list(chunk)
            if under:
                clause, p = _under_any("path", under)
                sql += f" AND {clause}"
                params.extend(p)
            for h, path, modality, raw in self.conn.execute(sql + " ORDER BY path", params):
                out.setdefault(h, []).append((path, modality, raw))
        return out

    def segment_kinds(self, space: str, model_id: str) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT s.kind, COUNT(*) FROM segments s JOIN vectors v ON v.segment_id = s.id"
            " WHERE v.space = ? AND v.model_id = ? GROUP BY s.kind",
            (space, model_id),
        )
        return {k: n for k, n in rows}

    def concept_vectors(self, model_id: str) -> dict[str, np.ndarray]:
        rows = self.conn.execute("SELECT concept, vector FROM concepts WHERE model_id = ?", (model_id,))
        return {c: np.frombuffer(v, dtype="<f4").astype(np.float32) for c, v in rows}

    def put_concept_vectors(self, model_id: str, concepts: Sequence[str], vectors: np.ndarray) -> None:
        vecs = np.ascontiguousarray(vectors, dtype="<f4")
        self.conn.executemany(
            "INSERT OR REPLACE INTO concepts (model_id, concept, dim, vector) VALUES (?, ?, ?, ?)",
            ((model_id, c, int(vecs.shape[1]), v.tobytes()) for c, v in zip(concepts, vecs, strict=True)),
        )

    def vectors_by_id(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for chunk in _chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for vid, vec in self.conn.execute(f"SELECT id, vector FROM vectors WHERE id IN ({marks})", chunk):
                out[int(vid)] = np.frombuffer(vec, dtype="<f4").astype(np.float32)
        return out


@dataclass
class SegmentRef:
    """A vector's segment and the content it belongs to (for rendering results)."""

    vector_id: int
    segment_id: int
    hash: str
    space: str
    model_id: str
    kind: str
    seq: int
    start_s: float | None
    end_s: float | None
    char_start: int | None
    char_end: int | None
    text: str | None
    page: int | None = None


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into complete statements (semicolons in comments are fine)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete statement in migration: {buf.strip()[:60]}")


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
