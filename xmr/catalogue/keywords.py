"""The keyword index: FTS5 (through sqlite-utils) over file names, folder names, titles and tags,
and documents' text only when it is stored anyway (--store-snippets).

``keywords`` holds one row per indexed file (migration 6); ``keywords_fts`` is its FTS5 index,
kept in step by sqlite-utils' triggers (also on the cascaded delete of a file). Ranked by a
weighted bm25: a word in the name counts most, one in the body least.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Mapping
from typing import Any

from xmr.catalogue.connection import CatalogueBase

COLUMNS = ("name", "folders", "title", "tags", "body")
# bm25 weights, in COLUMNS order: the name is what people remember of a file
WEIGHTS = (10.0, 3.0, 6.0, 4.0, 1.0)
FOLDER_DEPTH = 4  # the folders above a file that count as its words (nearest first)
_SPLIT = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])|[\W_]+")
_PHRASE = re.compile(r'"([^"]*)"')


def name_words(name: str) -> str:
    """A file or folder name as words: ``harbour-invoice.pdf`` -> ``harbour invoice pdf``,
    ``HarbourInvoice2023`` -> ``Harbour Invoice 2023`` (FTS5's tokenizer lower-cases)."""
    return " ".join(w for w in _SPLIT.split(name) if w)


def query_words(text: str) -> str:
    return " ".join(w.lower() for w in _SPLIT.split(text) if w)


def fts_query(text: str) -> str | None:
    """A search box's text as an FTS5 query: a quoted phrase stays a phrase, other words are
    alternatives (bm25 ranks files holding more of them first). None: no word at all."""
    terms: list[str] = []
    for phrase in _PHRASE.findall(text):
        words = query_words(phrase)
        if words:
            terms.append(f'"{words}"')
    for word in query_words(_PHRASE.sub(" ", text)).split():
        terms.append(f'"{word}"')  # quoted: FTS5 operators (AND, NEAR, *) in a query are words
    return " OR ".join(dict.fromkeys(terms)) or None


def _database(conn: sqlite3.Connection) -> Any:
    """sqlite-utils' ``Database`` over ``conn``, imported without pandas.

    sqlite-utils imports pandas at import time whenever it is installed (0.4 s here, and a
    text search consults the keyword index every time); xmr hands it no DataFrames, so a
    search process keeps pandas out while sqlite-utils loads."""
    import sys

    if "sqlite_utils" not in sys.modules and "pandas" not in sys.modules:
        sys.modules["pandas"] = None  # type: ignore[assignment]  # import_module("pandas") -> ImportError
        try:
            import sqlite_utils  # noqa: F401
        finally:
            del sys.modules["pandas"]
    from sqlite_utils import Database

    return Database(conn)


def ensure_fts(conn: sqlite3.Connection) -> None:
    """Create the FTS5 index and its triggers once (sqlite-utils' enable_fts), ranked by WEIGHTS."""
    db = _database(conn)
    if db["keywords_fts"].exists():
        return
    db["keywords"].enable_fts(list(COLUMNS), create_triggers=True, tokenize="unicode61 remove_diacritics 2")
    weights = ", ".join(str(w) for w in WEIGHTS)
    conn.execute(f"INSERT INTO keywords_fts (keywords_fts, rank) VALUES ('rank', 'bm25({weights})')")


class KeywordTable(CatalogueBase):
    """Writes and reads of the keyword index."""

    def has_keywords(self) -> bool:
        """False for a catalogue from before migration 6 opened read-only."""
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'keywords_fts'").fetchone() is not None

    def set_keywords(self, file_id: int, path: str, root: str, meta: Mapping[str, Any], body: str | None) -> None:
        rel = os.path.relpath(os.path.dirname(path), os.path.dirname(root.rstrip("/")) or "/")
        folders = [p for p in rel.split(os.sep) if p not in ("", ".", "..")][-FOLDER_DEPTH:]
        row = (
            file_id,
            name_words(os.path.basename(path)),
            " ".join(name_words(f) for f in reversed(folders)),
            meta.get("title"),
            " ".join(str(meta[k]) for k in ("tags", "artist", "album", "author") if meta.get(k)) or None,
            body,
        )
        self.conn.execute("DELETE FROM keywords WHERE file_id = ?", (file_id,))
        self.conn.execute(
            "INSERT INTO keywords (file_id, name, folders, title, tags, body) VALUES (?, ?, ?, ?, ?, ?)", row
        )

    def keyword_search(self, text: str, limit: int = 5000) -> list[tuple[str, str, str, float]]:
        """(path, hash, modality, bm25) of indexed files matching the words of ``text``, best
        first (bm25 made positive here: higher is better)."""
        query = fts_query(text)
        if query is None or not self.has_keywords():
            return []
        # the statement sqlite-utils' table.search() runs (FTS5 rank = the bm25 weights set by
        # ensure_fts), written out: importing sqlite-utils costs 0.15-0.25 s per search process
        rows = self.conn.execute(
            "SELECT keywords.file_id, keywords_fts.rank FROM keywords JOIN keywords_fts"
            " ON keywords.rowid = keywords_fts.rowid WHERE keywords_fts MATCH ? ORDER BY keywords_fts.rank LIMIT ?",
            (query, limit),
        )
        ranked = [(int(fid), -float(rank)) for fid, rank in rows]
        files: dict[int, tuple[str, str, str]] = {}
        ids = [i for i, _ in ranked]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for fid, path, h, modality in self.conn.execute(
                f"SELECT id, path, hash, modality FROM files WHERE status = 'indexed' AND id IN ({marks})", chunk
            ):
                files[int(fid)] = (path, h, modality)
        return [(*files[i], score) for i, score in ranked if i in files]
