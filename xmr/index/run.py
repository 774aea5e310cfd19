"""``xmr index``: crawl, reconcile with the catalogue, decode, embed, commit.

The flow is a streaming pipeline so memory stays flat whatever the collection:

1. walk the roots; a file whose size and mtime match its catalogue row is
   *unchanged* and is not opened (plan: xmr.index.plan);
2. new or changed files go to worker processes (bounded in flight) that hash
   them, classify them by content and decode/preprocess what still needs a
   vector (content already embedded — a moved or duplicated file — is not
   decoded again; the driver decides that, workers never open the catalogue)
   (decode: xmr.index.decode, run by the embedder: xmr.index.embed);
3. the embedder encodes batches on the chosen device and the driver commits each
   batch in one transaction (xmr.index.commit);
4. files that disappeared under an indexed root are deleted last, so a move
   within the run keeps its vectors; then the ANN caches are refreshed
   (xmr.index.finish).

An interrupted run keeps every committed batch; the next run resumes, since
half-done files stay ``pending``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from xmr import media, paths
from xmr.catalogue import Catalogue, now_iso
from xmr.errors import Interrupted, PathNotFound, UsageError
from xmr.index.commit import Committer
from xmr.index.embed import Embedder, LocalEmbedder
from xmr.index.finish import Finish
from xmr.index.items import _Item, _Prepared, _segment_estimate, wanted_spaces
from xmr.index.models import RunModels
from xmr.index.options import IndexOptions, IndexReport, Progress, _NoProgress
from xmr.index.plan import Planner
from xmr.lock import index_lock
from xmr.settings import Settings


def _resolve_roots(roots: Sequence[str | os.PathLike[str]]) -> list[str]:
    if not roots:
        raise UsageError("give at least one folder or file to index")
    out = []
    for r in roots:
        p = os.path.abspath(os.path.expanduser(os.fspath(r)))
        if not os.path.lexists(p):
            raise PathNotFound("no such file or folder", path=r)
        out.append(p)
    return out


def index(
    roots: Sequence[str | os.PathLike[str]],
    *,
    index_dir: Path | None = None,
    settings: Settings | None = None,
    options: IndexOptions | None = None,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
) -> IndexReport:
    """Index ``roots`` into the catalogue at ``index_dir``; see the module docstring.

    ``embedder``: what decodes and embeds (default: a ``LocalEmbedder`` for these
    settings and options)."""
    settings = settings or Settings.from_env()
    options = options or IndexOptions()
    progress = progress or _NoProgress()
    index_dir = index_dir or paths.index_dir()
    bad = set(options.modalities) - set(media.names())
    if bad:
        raise UsageError(f"unknown modality {sorted(bad)[0]!r}; choose from {', '.join(media.names())}")
    root_paths = _resolve_roots(roots)

    def waiting(pid: int | None) -> None:
        progress.warn(f"waiting for another xmr process (pid {pid or 'unknown'}) to finish with this index")

    with index_lock(index_dir, wait=options.wait, on_wait=waiting):
        notice = paths.tighten_index_modes(index_dir)
        if notice:
            progress.warn(notice)
        with Catalogue.open(index_dir, create=True) as cat:
            if options.store:
                from xmr.store.factory import record_store

                record_store(cat, options.store)
            from dataclasses import replace

            from xmr.ocr.policy import choose_mode

            options = replace(options, ocr=choose_mode(cat, options.ocr))
            if embedder is not None and hasattr(embedder, "options"):
                embedder.options = replace(embedder.options, ocr=options.ocr)
            embedder = embedder or LocalEmbedder(settings, options)
            return _Run(cat, embedder, root_paths, settings, options, progress).execute()


# a file with at least this many segments (an image, an audio window, a 77-token passage) gets
# its own progress detail while it is embedded: at ~20 ms a passage, a second or more
LONG_FILE_SEGMENTS = 64


def _inputs(p: _Prepared) -> str:
    """What a decoded file gives the encoders, for the progress line ("812 frames", "the text of
    300 pages"). Counts known before embedding: a text's passages overlap and are cut by the
    tokenizers, so its length is given, not a passage count."""
    parts = []
    if p.frames:
        parts.append(f"{len(p.frames)} frames")
    if p.audio_windows:
        parts.append(f"{len(p.audio_windows)} audio windows")
    if p.text is not None:
        parts.append(f"the text of {len(p.pages)} pages" if p.pages else f"{len(p.text):,} characters of text")
    return " and ".join(parts) or "its segments"


class _Run:
    """The driver: runs the steps in order and is the only one that writes the catalogue."""

    def __init__(
        self,
        cat: Catalogue,
        embedder: Embedder,
        roots: list[str],
        settings: Settings,
        options: IndexOptions,
        progress: Progress,
    ):
        self.cat = cat
        self.embedder = embedder
        self.options = options
        self.progress = progress
        self.spaces_for = media.spaces_for(options.modalities)
        # spaces only some files reach (an image's recognised text in clap) may be loaded too
        optional = media.optional_spaces_for(options.modalities) if options.ocr != "off" else {}
        self.spaces = sorted({s for m in options.modalities for s in (*self.spaces_for[m], *optional.get(m, ()))})
        args = {
            "roots": roots,
            **_run_arguments(options),
            "clip_model": settings.clip_model,
            "clap_model": settings.clap_model,
        }
        self.run_id = cat.start_run("index", args)
        self.report = IndexReport(run_id=self.run_id, roots=roots)
        self.models = RunModels(cat, embedder, settings, self.spaces, self.spaces_for, progress)
        self.planner = Planner(cat, roots, options, self.spaces_for, self.models, self.report, progress)
        self.committer = Committer(
            cat,
            self.run_id,
            now_iso(),
            self.spaces_for,
            options.modalities,
            self.report,
            progress,
            store_snippets=options.store_snippets,
        )
        self.finish = Finish(cat, embedder, self.models, self.spaces, progress)
        self._indexing = (0, 0)  # (total, committed) of the indexing phase, to resume it after a load

    def execute(self) -> IndexReport:
        t0 = time.perf_counter()
        status = "failed"
        try:
            plan = self.planner.plan()
            self.committer.record_plan(plan)
            if plan.work:
                self._process(plan.work)
            self.committer.delete(plan.vanished)
            self.finish.run(self.options)
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            self.report.interrupted = True
            raise Interrupted("interrupted; what was committed is kept and the next run resumes") from None
        finally:
            self.report.elapsed_s = round(time.perf_counter() - t0, 3)
            self.report.pending = self.cat.count_status("pending")
            with contextlib.suppress(Exception):
                self.cat.finish_run(self.run_id, status, self.report.counts())
        return self.report

    # -- decode and embed, batch by batch ---------------------------------------------------
    def _process(self, work: list[_Item]) -> None:
        if hasattr(self.embedder, "on_page"):  # long decodes (a scanned PDF's OCR) report their pages
            self.embedder.on_page = self._page
        with self.embedder.decoded(work, self._triage) as decoded:
            # the pool (if any) starts first: its workers start up while the models load
            self.models.load_needed(work)
            self._consume(decoded, len(work))

    def _page(self, path: str, done: int, total: int) -> None:
        self._detail(f"{os.path.basename(path)}: page {done} of {total}")

    def _detail(self, text: str) -> None:
        detail = getattr(self.progress, "detail", None)
        if detail is not None:
            detail(text)

    def _triage(self, p: _Prepared) -> bool:
        """Whether an identified file must be decoded: some space wanted for its modality
        lacks its content's vectors (those it has go to ``p.spaces_done``)."""
        if p.error or p.skip:
            return False
        spaces = self.spaces_for.get(p.modality, ())
        if not spaces:
            return False
        p.spaces_done = self.cat.encoded_spaces(p.hash, self.models.models()) & set(spaces)
        # an image OCR has not read: decoded again (text found re-embeds it with its passages)
        return not set(spaces) <= p.spaces_done or p.item.ocr_pending

    def _consume(self, prepared_items: Iterable[_Prepared], total: int) -> None:
        """Group prepared files into batches and commit each."""
        self.progress.phase("indexing", total)
        self._indexing = (total, 0)
        batch: list[_Prepared] = []
        n_segments = 0.0
        # small first batches get the model going while the decoders fill the pipeline
        limit = min(8, self.options.commit_segments)
        for prepared in prepared_items:
            batch.append(prepared)
            n_segments += _segment_estimate(prepared)
            if n_segments >= limit or len(batch) >= self.options.commit_files:
                self._commit(batch)
                batch, n_segments = [], 0.0
                limit = min(2 * limit, self.options.commit_segments)
        if batch:
            self._commit(batch)

    def _commit(self, batch: list[_Prepared]) -> None:
        """Embed what the batch needs, then write it all in one transaction."""
        self._complete(batch)
        # a long file's embedding takes a while (a 300-page scan's passages, an hour of video):
        # say so, or the progress line stays on its last decoded page
        todo = [p for p in batch if set(wanted_spaces(p, self.spaces_for)) - p.spaces_done]
        longest = max(todo, key=_segment_estimate, default=None)
        if longest is not None and _segment_estimate(longest) >= LONG_FILE_SEGMENTS:
            self._detail(f"{os.path.basename(longest.item.path)}: embedding {_inputs(longest)}")
        embedded = self.embedder.embed(batch, self.spaces_for)
        self.committer.commit(batch, embedded, self.models.models())
        self.progress.advance(len(batch))
        self._indexing = (self._indexing[0], self._indexing[1] + len(batch))

    def _complete(self, batch: list[_Prepared]) -> None:
        """Safety net for what the look ahead (xmr.needed) missed or a file that changed since:
        load the encoders the batch still needs, and prepare again the images that met no
        image preprocessor."""
        while True:
            missing: set[str] = set()
            for p in batch:
                if not (p.error or p.skip):
                    missing.update(set(wanted_spaces(p, self.spaces_for)) - p.spaces_done)
            missing = (missing & set(self.spaces)) - self.models.loaded()
            if not missing:
                return
            self.models.load(missing)  # adds at least one space each time round: the loop ends
            self.embedder.redecode(batch, self._triage)
            total, done = self._indexing
            self.progress.phase("indexing", total)
            self.progress.advance(done)


def _run_arguments(options: IndexOptions) -> dict[str, object]:
    """The options as recorded in the run row (lists, not tuples)."""
    from dataclasses import asdict

    args = asdict(options)
    args["excludes"] = list(options.excludes)
    args["modalities"] = list(options.modalities)
    args["text_extensions"] = list(options.text_extensions)
    args["within"] = list(options.within)
    return args
