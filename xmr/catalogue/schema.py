"""Numbered schema migrations; each runs in one transaction with PRAGMA user_version."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from xmr.catalogue.connection import CatalogueBase

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
    (
        6,
        """
        -- descriptive metadata of a file (xmr.media.meta), read from the content ``hash``: a row
        -- missing or of another hash makes the next run read it again (without re-embedding)
        CREATE TABLE IF NOT EXISTS file_meta (
            file_id INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
            hash TEXT,
            taken_at TEXT,                  -- UTC ISO 8601
            utc_offset TEXT,                -- "+02:00": the offset it was taken at, when known
            camera_make TEXT,
            camera_model TEXT,
            lens TEXT,
            lat REAL,
            lon REAL,
            orientation INTEGER,
            title TEXT,
            artist TEXT,
            album TEXT,
            author TEXT,
            tags TEXT,
            read_at TEXT NOT NULL
        );
        -- what the keyword index (keywords_fts, FTS5, made by xmr.catalogue.keywords) searches:
        -- names, folder names, titles, tags; document text only with --store-snippets
        CREATE TABLE IF NOT EXISTS keywords (
            file_id INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
            name TEXT,
            folders TEXT,
            title TEXT,
            tags TEXT,
            body TEXT
        );
        """,
    ),
    (
        7,
        """
        -- text recognised in pixels (xmr.ocr): a text passage's origin ('ocr'; NULL: the file's own text)
        ALTER TABLE segments ADD COLUMN origin TEXT;
        -- per content: how OCR read it, or why it did not (status text|no text|gated|failed)
        CREATE TABLE IF NOT EXISTS ocr (
            hash TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            reason TEXT,                    -- the gate's reason, a failure, a truncation
            models TEXT,                    -- JSON: role (det, rec, cls, engine) -> model
            settings TEXT,                  -- JSON: mode, limits, the image size the boxes refer to
            n_lines INTEGER NOT NULL,
            elapsed_s REAL,
            created TEXT NOT NULL
        );
        -- each recognised line: its box and its span in the recognised text the passages index;
        -- the text itself only with --store-snippets
        CREATE TABLE IF NOT EXISTS ocr_lines (
            hash TEXT NOT NULL,
            seq INTEGER NOT NULL,
            page INTEGER,                   -- PDF page, from 1; NULL for an image
            char_start INTEGER NOT NULL,
            char_end INTEGER NOT NULL,
            score REAL NOT NULL,            -- the recogniser's confidence
            box TEXT NOT NULL,              -- JSON: 4 corner points in pixels of the image (page) as read
            text TEXT,
            PRIMARY KEY (hash, seq)
        );
        """,
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
# a reader (search, which never migrates) accepts catalogues from this version on: the
# migrations after it add indexes, and OCR (7), which a reader of an older one does without
READABLE_FROM = 4


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


def migrate(cat: CatalogueBase) -> None:
    """Bring the catalogue to SCHEMA_VERSION, one migration per transaction."""
    for number, sql in MIGRATIONS:
        with cat.transaction():
            current = cat.conn.execute("PRAGMA user_version").fetchone()[0]
            if current >= number:
                continue
            for statement in _statements(sql):
                try:
                    cat.conn.execute(statement)
                except sqlite3.OperationalError as exc:
                    # a column already there (a catalogue whose version was set back): as wanted
                    if "duplicate column name" not in str(exc):
                        raise
            cat.conn.execute(f"PRAGMA user_version = {int(number)}")
    from xmr.catalogue.keywords import ensure_fts

    ensure_fts(cat.conn)  # outside a transaction: sqlite-utils runs it as a script
