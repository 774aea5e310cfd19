"""The plan step: walk the roots, compare with the catalogue, and list the work.

Reads the catalogue only; the driver records what the plan found (unchanged files
seen again, unreadable folders).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

from xmr import media
from xmr.catalogue import Catalogue, FileRow, path_key
from xmr.crawl import FoundFile, WalkError, walk, walk_within
from xmr.documents import NO_TEXT_LAYER, Policy
from xmr.index.items import _Item
from xmr.index.models import RunModels
from xmr.index.options import IndexOptions, IndexReport, Progress
from xmr.ocr.record import GATED, TEXT


@dataclass
class Plan:
    work: list[_Item] = field(default_factory=list)  # files to identify, decode and embed
    vanished: list[FileRow] = field(default_factory=list)  # rows whose file is gone
    unchanged: list[int] = field(default_factory=list)  # row ids of files seen as they were
    walk_errors: list[WalkError] = field(default_factory=list)  # folders that could not be read


class Planner:
    """Sorts each file under the roots into unchanged / work, and finds what vanished."""

    def __init__(
        self,
        cat: Catalogue,
        roots: list[str],
        options: IndexOptions,
        spaces_for: Mapping[str, tuple[str, ...]],
        models: RunModels,
        report: IndexReport,
        progress: Progress,
    ):
        self.cat = cat
        self.roots = roots
        self.options = options
        self.spaces_for = spaces_for
        self.models = models
        self.report = report
        self.progress = progress
        self._extra_extensions = Policy.with_extensions(options.text_extensions).extra

    def plan(self) -> Plan:
        """Walk the roots and sort each file into unchanged / work; also list the vanished."""
        self.progress.phase("scanning", None)
        existing: dict[str, FileRow] = {}
        for root in self.options.within or self.roots:
            existing.update(self.cat.files_under(root))
        seen: set[str] = set()
        # indexed before metadata was read (an older index), or read from other content:
        # scheduled for a metadata-only pass, which embeds nothing
        self._lacking_meta = self.cat.files_lacking_meta([row.id for row in existing.values()])
        # OCR on: contents OCR has looked at (xmr.ocr), so that images indexed before are read once
        self._ocr_seen = self.cat.ocr_statuses() if self.options.ocr not in (None, "off") else None
        self._no_text_layer = self.cat.skipped_ids(NO_TEXT_LAYER) if self._ocr_seen is not None else set()
        out = Plan()
        error_dirs: list[str] = []
        # watch mode walks only the places that changed (``within``): only files there can vanish
        for entry in (partial(walk_within, within=self.options.within) if self.options.within else walk)(
            self.roots,
            include_hidden=self.options.include_hidden,
            excludes=self.options.excludes,
            follow_symlinks=self.options.follow_symlinks,
        ):
            if isinstance(entry, WalkError):
                out.walk_errors.append(entry)
                error_dirs.append(path_key(str(entry.path))[0])
                continue
            key = path_key(str(entry.path))[0]
            if key in seen:
                continue
            seen.add(key)
            self.report.found += 1
            self.progress.advance()
            row = existing.get(key)
            if row is not None and row.size == entry.size and row.mtime_ns == entry.mtime_ns:
                if row.status == "pending" or (row.status == "error" and self.options.retry_errors):
                    out.work.append(self._item(entry, row, known=row.status == "pending"))
                elif row.status == "skipped" and self._reconsider_skipped(row):
                    out.work.append(self._item(entry, row, known=False))
                elif row.status == "indexed" and self._needs_spaces(row):
                    out.work.append(self._item(entry, row, known=True))
                elif row.status == "indexed" and self._needs_ocr(row):
                    out.work.append(self._item(entry, row, known=True, ocr=True))
                    self.report.unchanged += 1
                elif row.status == "indexed" and row.id in self._lacking_meta:
                    out.work.append(self._item(entry, row, known=True))
                    self.report.unchanged += 1
                    self.report.metadata_only += 1
                else:
                    out.unchanged.append(row.id)
                    self.report.unchanged += 1
                continue
            if row is None:
                self.report.new += 1
            else:
                self.report.changed += 1
            out.work.append(self._item(entry, row, known=False))

        roots = {path_key(r)[0] for r in self.roots}
        # rows recorded for unreadable folders are refreshed, not vanished
        out.vanished = [
            row
            for key, row in existing.items()
            if key not in seen
            and not any(key == d or key.startswith(d + "/") for d in error_dirs)
            # a file indexed through another root (say a hidden folder named explicitly) that
            # this walk skipped is only gone if it no longer exists
            and (row.root in roots or not os.path.lexists(row.fs_path))
        ]
        return out

    def _item(self, entry: FoundFile, row: FileRow | None, *, known: bool, ocr: bool = False) -> _Item:
        return _Item(
            path=str(entry.path),
            root=str(entry.root),
            size=entry.size,
            mtime_ns=entry.mtime_ns,
            row_id=row.id if row else None,
            old_hash=row.hash if row else None,
            known_hash=row.hash if (known and row) else None,
            known_modality=row.modality if (known and row) else None,
            ocr_pending=ocr,
        )

    def _needs_ocr(self, row: FileRow) -> bool:
        """An indexed image OCR has not read yet: indexed before OCR or with ``--ocr off``, or
        passed over by the gate and now ``--ocr all``; or whose text lacks its clap vectors by
        the active model (after a model switch)."""
        if self._ocr_seen is None or row.hash is None or not media.find(row.modality or ""):
            return False
        kind = media.get(row.modality or "")
        if media.TEXT_SEGMENT not in kind.optional_segments.values() or not self.spaces_for.get(kind.name):
            return False
        status = self._ocr_seen.get(row.hash)
        if status == TEXT:  # its text's vectors in a space the kind has no own segment in (clap)
            extra = [s for s in kind.optional_segments if s not in kind.segments]
            return any(s in self.models.stale_spaces or row.hash not in self.models.encoded_by_active(s) for s in extra)
        return status is None or (status == GATED and self.options.ocr == "all")

    def _reconsider_skipped(self, row: FileRow) -> bool:
        """A file skipped for a reason that may have gone: --retry-errors (Ghostscript or rawpy
        installed since), or a text file whose extension --text-ext now adds."""
        if row.modality not in ("image", "text"):
            return False
        if self.options.retry_errors:
            return True
        if row.modality == "text" and row.id in self._no_text_layer:
            return True  # a scanned PDF skipped while OCR was off: read its pages now
        return row.modality == "text" and os.path.splitext(row.path)[1].lower() in self._extra_extensions

    def _needs_spaces(self, row: FileRow) -> bool:
        """An indexed file needs work again when a space it belongs to lacks its vectors by the
        active model: after a model switch, also one made earlier on other roots only."""
        for space in self.spaces_for.get(row.modality or "", ()):
            if space in self.models.stale_spaces or row.hash not in self.models.encoded_by_active(space):
                return True
        return False
