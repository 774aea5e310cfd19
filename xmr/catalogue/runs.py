"""Runs of commands, and the reports (status, errors, one file's provenance)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xmr import __version__, paths
from xmr.catalogue.models import ModelsTable
from xmr.catalogue.rows import now_iso, path_key


class RunsAndReports(ModelsTable):
    """The ``runs`` table and the reports over the whole catalogue."""

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
        # schema 7 on: a passage's origin ("ocr"); an older catalogue (read, not migrated) has none
        origin_column = "s.origin" if self.conn.execute("PRAGMA user_version").fetchone()[0] >= 7 else "NULL"
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
                    "origin": origin,
                    "vector_id": vid,
                    "dim": dim,
                }
                for sid, kind, seq, s0, s1, c0, c1, page, origin, vid, dim in self.conn.execute(
                    "SELECT s.id, s.kind, s.seq, s.start_s, s.end_s, s.char_start, s.char_end, s.page,"
                    f" {origin_column}, v.id, v.dim FROM segments s LEFT JOIN vectors v ON v.segment_id = s.id"
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
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", ("decoding." + str(info["hash"]),))
        decoding = row.fetchone()
        if decoding:
            info["decoding"] = json.loads(decoding[0])  # a video's frame sampling (ContentTables.set_decoding)
        return info

    def integrity_check(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]
