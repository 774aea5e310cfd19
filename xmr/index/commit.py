"""The commit step: the driver's writes to the catalogue, one transaction per batch.

Only this step writes file rows and vectors (the model rows are written where models
are loaded, xmr.index.models); decoding and embedding never touch the catalogue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from xmr.catalogue import Catalogue, FileRow, path_key
from xmr.index.embed import Embedded
from xmr.index.items import _Prepared, wanted_spaces
from xmr.index.options import IndexReport, Progress
from xmr.index.plan import Plan


class Committer:
    """Writes a run's results and keeps its report's counts."""

    def __init__(
        self,
        cat: Catalogue,
        run_id: int,
        seen_at: str,
        spaces_for: Mapping[str, tuple[str, ...]],
        modalities: Sequence[str],
        report: IndexReport,
        progress: Progress,
        *,
        store_snippets: bool = False,
    ):
        self.cat = cat
        self.store_snippets = store_snippets  # keep recognised (OCR) lines' text too
        self.run_id = run_id
        self.seen_at = seen_at
        self.spaces_for = spaces_for
        self.modalities = modalities
        self.report = report
        self.progress = progress
        self.vanished_hashes: set[str] = set()
        self.replaced_hashes: set[str] = set()
        self.warnings: list[str] = []

    def record_plan(self, plan: Plan) -> None:
        """Files seen unchanged, and folders that could not be read."""
        self.vanished_hashes = {r.hash for r in plan.vanished if r.hash}
        with self.cat.transaction():
            self.cat.touch_files(plan.unchanged, self.seen_at, self.run_id)
            for err in plan.walk_errors:
                self._record_error(str(err.path), str(err.root), err.reason, size=0, mtime_ns=0, modality=None)
        self.flush_warnings()

    def commit(self, batch: list[_Prepared], embedded: Embedded, models: dict[str, str]) -> None:
        """Write the batch and its vectors in one transaction."""
        encoded, failed = embedded.encodings, embedded.failed
        written: set[tuple[str, str]] = set()
        with self.cat.transaction():
            for i, p in enumerate(batch):
                self.report.bytes_read += p.bytes_read
                self.report.files_read += p.opened
                error = p.error or failed.get(i)
                if error:
                    self._record_error(
                        p.item.path, p.item.root, error, p.item.size, p.item.mtime_ns, p.modality, p.hash
                    )
                    continue
                if p.skip:
                    self._upsert(p, "skipped", p.skip)
                    self.report.skipped += 1
                    self.report.skipped_by_reason[p.skip] = self.report.skipped_by_reason.get(p.skip, 0) + 1
                    continue
                spaces = wanted_spaces(p, self.spaces_for)
                if p.modality == "other" or (not spaces and p.modality not in self.modalities):
                    status = "skipped" if p.modality == "other" else "pending"
                    self._upsert(p, status)
                    if status == "skipped":
                        self.report.skipped += 1
                    continue
                if p.spaces_done - self.cat.encoded_spaces(p.hash, models):
                    # its vectors went since the worker looked (e.g. `xmr remove` meanwhile):
                    # leave it pending so the next run embeds it
                    self._upsert(p, "pending")
                    continue
                wrote = False
                for space in spaces:
                    if space in p.spaces_done or (p.hash, space) in written:
                        continue
                    enc = encoded[(p.hash, space)]
                    self.cat.add_encoding(p.hash, space, enc.model_id, enc.segments, enc.vectors, enc.dropped)
                    written.add((p.hash, space))
                    wrote = True
                    self.report.segments += len(enc.segments)
                if wrote and p.provenance:
                    self.cat.set_decoding(p.hash, p.provenance)
                if p.ocr is not None:  # also when it found nothing: not read again next run
                    self.cat.set_ocr(p.hash, p.ocr if self.store_snippets else p.ocr.without_text())
                if wrote:
                    self.report.embedded_files += 1
                elif p.item.known_hash is None and p.item.old_hash != p.hash:
                    if p.hash in self.vanished_hashes:
                        self.report.moved += 1
                    else:
                        self.report.duplicates += 1
                file_id = self._upsert(p, "indexed")
                self._write_meta(file_id, p, encoded)
        self.flush_warnings()

    def _write_meta(self, file_id: int, p: _Prepared, encoded: Mapping[tuple[str, str], Any]) -> None:
        """The file's metadata and keyword row; a document's text only when stored anyway
        (--store-snippets keeps passages' text in the segments)."""
        meta = p.meta or {}
        self.cat.set_file_meta(file_id, p.hash, meta)
        body = None
        for space in wanted_spaces(p, self.spaces_for):
            enc = encoded.get((p.hash, space))
            texts = [s.text for s in enc.segments if s.text] if enc is not None else []
            if texts:
                body = " ".join(texts)
                break
        self.cat.set_keywords(file_id, p.item.path, p.item.root, meta, body)

    def _upsert(self, p: _Prepared, status: str, reason: str | None = None) -> int:
        return self._write_row(
            p.item.path, p.item.root, p.item.size, p.item.mtime_ns, p.hash, p.modality, status, reason
        )

    def _record_error(
        self,
        path: str,
        root: str,
        reason: str,
        size: int,
        mtime_ns: int,
        modality: str | None,
        h: str | None = None,
    ) -> None:
        self._write_row(path, root, size, mtime_ns, h, modality, "error", reason)
        self.report.failed += 1
        self.report.errors.append({"path": path_key(path)[0], "error": reason})
        # shown after the commit: a failing progress display must not roll the batch back
        self.warnings.append(f"{path_key(path)[0]}: {reason}")

    def _write_row(
        self,
        path: str,
        root: str,
        size: int,
        mtime_ns: int,
        h: str | None,
        modality: str | None,
        status: str,
        error: str | None,
    ) -> int:
        file_id, old_hash = self.cat.upsert_file(
            path,
            root=root,
            size=size,
            mtime_ns=mtime_ns,
            hash=h,
            modality=modality,
            status=status,
            error=error,
            run_id=self.run_id,
            seen=self.seen_at,
        )
        if old_hash and old_hash != h:
            # the file changed: its previous content goes at the end of the run unless another
            # file has it by then (a copy or a move found later in this run may still need it)
            self.replaced_hashes.add(old_hash)
        return file_id

    def flush_warnings(self) -> None:
        for message in self.warnings:
            self.progress.warn(message)
        self.warnings.clear()

    def delete(self, rows: Iterable[FileRow]) -> None:
        """Remove vanished files, then content nothing refers to any more."""
        ids = [r.id for r in rows]
        with self.cat.transaction():
            if ids:
                self.report.removed += self.cat.delete_files(ids)
            self.cat.gc_contents(self.replaced_hashes)
