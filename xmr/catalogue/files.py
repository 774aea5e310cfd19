"""Files on disk: one row per path, what the crawl is reconciled against."""

from __future__ import annotations

from collections.abc import Sequence

from xmr.catalogue.content import ContentTables
from xmr.catalogue.rows import FileRow, _chunks, _under_clause, path_key


class FilesTable(ContentTables):
    """The ``files`` table."""

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

    def count_status(self, status: str) -> int:
        """How many files have this status (``pending``: what the next run resumes)."""
        return int(self.conn.execute("SELECT COUNT(*) FROM files WHERE status = ?", (status,)).fetchone()[0])
