"""``xmr index``: crawl, reconcile with the catalogue, decode, embed, commit.

The flow is a streaming pipeline so memory stays flat whatever the collection:

1. walk the roots; a file whose size and mtime match its catalogue row is
   *unchanged* and is not opened;
2. new or changed files go to worker processes (bounded in flight) that hash
   them, classify them by content and decode/preprocess what still needs a
   vector (content already embedded — a moved or duplicated file — is not
   decoded again);
3. the main process encodes batches on the chosen device and commits each
   batch in one transaction;
4. files that disappeared under an indexed root are deleted last, so a move
   within the run keeps its vectors; then the ANN caches are refreshed.

An interrupted run keeps every committed batch; the next run resumes, since
half-done files stay ``pending``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from xmr import needed, paths
from xmr.catalogue import Catalogue, FileRow, SegmentData, now_iso, path_key
from xmr.crawl import FoundFile, WalkError, walk
from xmr.documents import (
    HTML_EXTENSIONS,
    MAX_DOCUMENT_BYTES,
    PLAIN_EXTENSIONS,
    Document,
    Policy,
    is_junk,
    split_document,
)
from xmr.encoders import SPACES_FOR_MODALITY, honours_precision, model_status
from xmr.encoders.engine import index_encoder
from xmr.errors import Interrupted, ModelMissing, PathNotFound, UsageError, XmrError
from xmr.lock import index_lock
from xmr.settings import Settings
from xmr.sniff import HEAD_BYTES, classify

MODALITIES = ("image", "audio", "text")
MAX_BYTES_IN_FLIGHT = 64 * 1024 * 1024  # on-disk bytes of the files being decoded at once


class Progress(Protocol):
    """How the core reports progress; the CLI renders it on stderr."""

    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def warn(self, message: str) -> None: ...


class _NoProgress:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


@dataclass
class IndexOptions:
    include_hidden: bool = False
    excludes: Sequence[str] = ()
    follow_symlinks: bool = False
    modalities: Sequence[str] = MODALITIES
    retry_errors: bool = False
    workers: int | None = None  # None: chosen from the core count; 0: decode in this process
    audio_window_s: float = 10.0
    audio_hop_s: float = 10.0
    max_text_bytes: int = MAX_DOCUMENT_BYTES
    text_extensions: Sequence[str] = ()  # added to the document policy as plain text (--text-ext)
    store_snippets: bool = False  # keep passages' text in the catalogue (default: offsets only)
    commit_segments: int = 64  # flush a batch once it holds this many segments
    commit_files: int = 512  # ... or this many files
    checkpoint_ann: bool = True
    bridge_concepts: bool = True  # embed the bridge vocabulary once both spaces hold vectors (see _embed_concepts)
    wait: bool = False  # another writer holds the index: wait for it instead of failing
    codes: str | None = None  # binary|none|auto (xmr.store.policy); None: as recorded, else auto


@dataclass
class IndexReport:
    run_id: int
    roots: list[str]
    found: int = 0
    unchanged: int = 0
    new: int = 0
    changed: int = 0
    moved: int = 0
    duplicates: int = 0
    removed: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    embedded_files: int = 0
    segments: int = 0
    files_read: int = 0
    bytes_read: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    errors: list[dict[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("errors")
        d.pop("roots")
        d.pop("run_id")
        return d


# -- work items and what workers send back ----------------------------------------------


@dataclass
class _Item:
    path: str
    root: str
    size: int
    mtime_ns: int
    row_id: int | None
    old_hash: str | None
    known_hash: str | None  # set when the file is unchanged on disk but still pending
    known_modality: str | None


@dataclass
class _Prepared:
    item: _Item
    hash: str | None = None
    modality: str = "other"
    error: str | None = None  # one-line reason: the file is recorded as failed
    skip: str | None = None  # why a file xmr could read is not indexed (not a document, a missing tool)
    bytes_read: int = 0
    opened: bool = False  # the file's content was read (hashing or decoding)
    spaces_done: set[str] = field(default_factory=set)  # already embedded (moved / duplicate)
    pixels: np.ndarray | None = None
    audio_windows: list[tuple[float, float, np.ndarray]] | None = None
    text: str | None = None
    pages: tuple[tuple[int, int, int], ...] | None = None  # PDF pages: (number, start, end) in ``text``
    junk_guard: bool = True  # drop passages that are mostly non-words (not for --text-ext extensions)
    undecoded: bool = False  # an image met before CLIP's preprocessor was loaded: prepared again (_complete)


@dataclass
class _WorkerConfig:
    index_dir: str
    models: dict[str, str]  # space -> active model id
    spaces_for: dict[str, tuple[str, ...]]  # modality -> spaces wanted in this run
    image_preprocessor: Any
    audio_window_s: float
    audio_hop_s: float
    max_text_bytes: int
    policy: Policy = field(default_factory=Policy)


_worker: dict[str, Any] = {}
# characters of a full 77-token passage, and the least share of a batch a text counts for
PASSAGE_CHARS = 300
MIN_TEXT_SHARE = 0.125
WORKER_NICE = 10  # added to the decode workers' niceness (os.nice)


def _init_worker() -> None:
    # Ctrl-C is the parent's to handle; workers just stop when it shuts the pool down
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # decoders run in the encoder's idle gaps rather than taking a core from its threads:
    # 192 JPEGs, 2 rounds each, in the same run: 19.8 s at nice 10 against 21.8 s at 0
    # (benchmarks/vs_naive.py; the naive loop took 21.1 and 20.4 s)
    with contextlib.suppress(OSError, AttributeError):
        os.nice(WORKER_NICE)


def _worker_catalogue(config: _WorkerConfig) -> Catalogue:
    """A read-only connection per process and index (inline runs share the module state)."""
    cat = _worker.get("catalogue")
    if cat is None or _worker.get("catalogue_dir") != config.index_dir:
        if cat is not None:
            cat.close()
        cat = Catalogue.open(Path(config.index_dir), readonly=True)
        _worker["catalogue"], _worker["catalogue_dir"] = cat, config.index_dir
    return cat


def _hash_file(path: str) -> tuple[str, bytes, int]:
    h = hashlib.blake2b(digest_size=16)
    n = 0
    head = b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            if not head:
                head = chunk[:HEAD_BYTES]
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), head, n


def _decoding_items(work: Sequence[_Item]) -> int:
    """Items whose preparation is real work (images, audio, PDFs, anything unknown).

    Plain text and HTML cost far less to read than to embed, and a decode worker beside
    the encoder's threads only takes cores from it: 3,000 one-line notes indexed in
    101 s inline against 115 s with a worker (2 cores). Such runs prepare inline.
    """
    light = PLAIN_EXTENSIONS | HTML_EXTENSIONS
    return sum(
        1
        for item in work
        # by name even when the modality is known: a PDF is text, but its extraction is work
        if item.known_modality in ("image", "audio") or os.path.splitext(item.path)[1].lower() not in light
    )


def _prepare(item: _Item, config: _WorkerConfig) -> _Prepared:
    """Hash, classify and decode one file. Runs in a worker process (or inline)."""
    out = _Prepared(item=item)
    head: bytes | None = None
    try:
        if item.known_hash is not None and item.known_modality is not None:
            out.hash, out.modality = item.known_hash, item.known_modality
        else:
            out.opened = True
            try:
                out.hash, head, out.bytes_read = _hash_file(item.path)
            except OSError as exc:
                out.error = f"cannot read: {exc.strerror or exc}"
                return out
            c = classify(os.path.basename(item.path), head, out.bytes_read)
            out.modality = c.modality
            if c.reason:
                out.error = c.reason
                return out
            if c.skip:
                out.skip = c.skip
                return out
        spaces = config.spaces_for.get(out.modality, ())
        if not spaces:
            return out
        cat = _worker_catalogue(config)
        out.spaces_done = cat.encoded_spaces(out.hash, config.models) & set(spaces)
        if set(spaces) <= out.spaces_done:
            return out
        if out.modality == "image" and config.image_preprocessor is None:
            out.undecoded = True  # not seen as an image before the run (xmr.needed), or changed since
            return out
        out.opened = True
        if out.modality == "image":
            out.pixels = np.asarray(config.image_preprocessor(item.path), dtype=np.float32)
        elif out.modality == "audio":
            from xmr.preprocess.audio import load_audio, windows

            audio = load_audio(item.path)
            out.audio_windows = [
                (w.start_s, w.end_s, w.samples)
                for w in windows(audio, window_s=config.audio_window_s, hop_s=config.audio_hop_s)
            ]
        elif out.modality == "text":
            from xmr.documents import read_document

            if head is None:
                try:
                    with open(item.path, "rb") as f:
                        head = f.read(HEAD_BYTES)
                except OSError as exc:
                    out.error = f"cannot read: {exc.strerror or exc}"
                    return out
            doc, out.skip = read_document(item.path, head, policy=config.policy, max_bytes=config.max_text_bytes)
            if doc is not None and not doc.text:
                out.error = "no text to index (only whitespace)"
            elif doc is not None:
                out.text, out.pages = doc.text, doc.pages
                out.junk_guard = config.policy.junk_guard(item.path)
    except XmrError as exc:
        out.error = exc.reason
    except Exception as exc:  # a decoder bug must not end the run; it is recorded per file
        out.error = f"{type(exc).__name__}: {exc}"
    return out


# -- the run -------------------------------------------------------------------------------


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
) -> IndexReport:
    """Index ``roots`` into the catalogue at ``index_dir``; see the module docstring."""
    settings = settings or Settings.from_env()
    options = options or IndexOptions()
    progress = progress or _NoProgress()
    index_dir = index_dir or paths.index_dir()
    bad = set(options.modalities) - set(MODALITIES)
    if bad:
        raise UsageError(f"unknown modality {sorted(bad)[0]!r}; choose from {', '.join(MODALITIES)}")
    root_paths = _resolve_roots(roots)

    def waiting(pid: int | None) -> None:
        progress.warn(f"waiting for another xmr process (pid {pid or 'unknown'}) to finish with this index")

    with index_lock(index_dir, wait=options.wait, on_wait=waiting):
        notice = paths.tighten_index_modes(index_dir)
        if notice:
            progress.warn(notice)
        with Catalogue.open(index_dir, create=True) as cat:
            return _Run(cat, root_paths, settings, options, progress).execute()


class _Run:
    def __init__(self, cat: Catalogue, roots: list[str], settings: Settings, options: IndexOptions, progress: Progress):
        self.cat = cat
        self.roots = roots
        self.settings = settings
        self.options = options
        self.progress = progress
        self.seen_at = now_iso()
        self.encoders: dict[str, Any] = {}
        self.spaces_for = {m: SPACES_FOR_MODALITY[m] if m in options.modalities else () for m in MODALITIES}
        self.spaces = sorted({s for m in options.modalities for s in SPACES_FOR_MODALITY[m]})
        args = {"roots": roots, **asdict(options), "clip_model": settings.clip_model, "clap_model": settings.clap_model}
        args["excludes"] = list(options.excludes)
        args["modalities"] = list(options.modalities)
        if options.workers != 0:
            # Decoders and torch's OpenMP threads share the cores: spinning OpenMP threads
            # starve the decoders (measured: 68% of the model-only rate with spinning, 77%
            # passive; benchmarks/index.py). Only effective before torch is first imported,
            # which choosing a precision may do (_stale_spaces).
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        args["text_extensions"] = list(options.text_extensions)
        self.run_id = cat.start_run("index", args)
        self.report = IndexReport(run_id=self.run_id, roots=roots)
        self.vanished_hashes: set[str] = set()
        self.replaced_hashes: set[str] = set()
        self.warnings: list[str] = []
        self.stale_spaces = self._stale_spaces()
        self._extra_extensions = Policy.with_extensions(options.text_extensions).extra
        self._encoded_cache: dict[str, set[str]] = {}
        self.config: _WorkerConfig | None = None  # rebuilt whenever an encoder is loaded
        self._indexing = (0, 0)  # (total, committed) of the indexing phase, to resume it after a load

    # -- phases -----------------------------------------------------------------------
    def execute(self) -> IndexReport:
        t0 = time.perf_counter()
        status = "failed"
        try:
            work, to_delete = self._reconcile()
            self.vanished_hashes = {r.hash for r in to_delete if r.hash}
            if work:
                self._process(work)
            self._delete(to_delete)
            if self.options.checkpoint_ann:
                self._checkpoint_ann()
            if self.options.bridge_concepts:
                self._embed_concepts()
            self._prepare_search_state()
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            self.report.interrupted = True
            raise Interrupted("interrupted; what was committed is kept and the next run resumes") from None
        finally:
            self.report.elapsed_s = round(time.perf_counter() - t0, 3)
            self.report.pending = self.cat.conn.execute(
                "SELECT COUNT(*) FROM files WHERE status = 'pending'"
            ).fetchone()[0]
            with contextlib.suppress(Exception):
                self.cat.finish_run(self.run_id, status, self.report.counts())
        return self.report

    def _prepare_search_state(self) -> None:
        """Let the first search of this generation find its O(N) arrays ready (xmr.search)."""
        import sqlite3

        from xmr.search import prepare_state

        self.progress.phase("preparing search", None)
        try:
            prepare_state(self.cat, self.cat.index_dir)
        except (OSError, sqlite3.Error, ValueError):
            pass  # only a cache: the first search derives it instead

    def _reconcile(self) -> tuple[list[_Item], list[FileRow]]:
        """Walk the roots and sort each file into unchanged / work; return (work, vanished)."""
        self.progress.phase("scanning", None)
        existing: dict[str, FileRow] = {}
        for root in self.roots:
            existing.update(self.cat.files_under(root))
        seen: set[str] = set()
        unchanged: list[int] = []
        work: list[_Item] = []
        walk_errors: list[WalkError] = []
        error_dirs: list[str] = []
        root_of = {}
        for entry in walk(
            self.roots,
            include_hidden=self.options.include_hidden,
            excludes=self.options.excludes,
            follow_symlinks=self.options.follow_symlinks,
        ):
            if isinstance(entry, WalkError):
                walk_errors.append(entry)
                error_dirs.append(path_key(str(entry.path))[0])
                continue
            key = path_key(str(entry.path))[0]
            if key in seen:
                continue
            seen.add(key)
            root_of[key] = str(entry.root)
            self.report.found += 1
            self.progress.advance()
            row = existing.get(key)
            if row is not None and row.size == entry.size and row.mtime_ns == entry.mtime_ns:
                if row.status == "pending" or (row.status == "error" and self.options.retry_errors):
                    work.append(self._item(entry, row, known=row.status == "pending"))
                elif row.status == "skipped" and self._reconsider_skipped(row):
                    work.append(self._item(entry, row, known=False))
                elif row.status == "indexed" and self._needs_spaces(row):
                    work.append(self._item(entry, row, known=True))
                else:
                    unchanged.append(row.id)
                    self.report.unchanged += 1
                continue
            if row is None:
                self.report.new += 1
            else:
                self.report.changed += 1
            work.append(self._item(entry, row, known=False))

        with self.cat.transaction():
            self.cat.touch_files(unchanged, self.seen_at, self.run_id)
            for err in walk_errors:
                self._record_error(str(err.path), str(err.root), err.reason, size=0, mtime_ns=0, modality=None)
        self._flush_warnings()
        roots = {path_key(r)[0] for r in self.roots}
        vanished = [
            row
            for key, row in existing.items()
            if key not in seen
            and not any(key == d or key.startswith(d + "/") for d in error_dirs)
            # a file indexed through another root (say a hidden folder named explicitly) that
            # this walk skipped is only gone if it no longer exists
            and (row.root in roots or not os.path.lexists(row.fs_path))
        ]
        # rows recorded for unreadable folders are refreshed, not vanished
        return work, vanished

    def _item(self, entry: FoundFile, row: FileRow | None, *, known: bool) -> _Item:
        return _Item(
            path=str(entry.path),
            root=str(entry.root),
            size=entry.size,
            mtime_ns=entry.mtime_ns,
            row_id=row.id if row else None,
            old_hash=row.hash if row else None,
            known_hash=row.hash if (known and row) else None,
            known_modality=row.modality if (known and row) else None,
        )

    def _reconsider_skipped(self, row: FileRow) -> bool:
        """A file skipped for a reason that may have gone: --retry-errors (Ghostscript or rawpy
        installed since), or a text file whose extension --text-ext now adds."""
        if row.modality not in ("image", "text"):
            return False
        if self.options.retry_errors:
            return True
        return row.modality == "text" and os.path.splitext(row.path)[1].lower() in self._extra_extensions

    def _needs_spaces(self, row: FileRow) -> bool:
        """An indexed file needs work again when a space it belongs to lacks its vectors by the
        active model: after a model switch, also one made earlier on other roots only."""
        for space in self.spaces_for.get(row.modality or "", ()):
            if space in self.stale_spaces or row.hash not in self._encoded_by_active(space):
                return True
        return False

    def _encoded_by_active(self, space: str) -> set[str]:
        if space not in self._encoded_cache:
            model_id = self.cat.active_model(space)
            rows = self.cat.conn.execute(
                "SELECT hash FROM encodings WHERE space = ? AND model_id = ?", (space, model_id)
            )
            self._encoded_cache[space] = {h for (h,) in rows}
        return self._encoded_cache[space]

    def _stale_spaces(self) -> set[str]:
        """Spaces whose configured model or precision differs from the one the catalogue was built with."""
        from xmr.encoders import precision

        stale = set()
        wanted: str | None = None
        for space in self.spaces:
            active = self.cat.active_model(space)
            row = self.cat.model_row(active) if active else None
            if row is None or row.get("spec") != self._configured_spec(space):
                stale.add(space)
                continue
            if not honours_precision(space, self.settings):
                continue  # a custom backend's ids are its own
            if wanted is None:
                wanted = precision.expected_tag(self.settings.precision, self.settings.device)
            if precision.of_model_id(active) != wanted:
                stale.add(space)
        return stale

    def _configured_spec(self, space: str) -> str:
        return {"clip": self.settings.clip_model, "clap": self.settings.clap_model}.get(space, "")

    def _load_needed(self, work: list[_Item]) -> None:
        """Load the encoders of the spaces the work needs (xmr.needed), not every configured one."""
        self.progress.phase("checking file types", None)
        needs = needed.spaces_needed(
            work,
            self.spaces_for,
            self.spaces,
            done=lambda h, space: space not in self.stale_spaces and h in self._encoded_by_active(space),
        )
        spaces = set(needs.spaces)
        if not needs.complete:
            # workers need CLIP's image preprocessor, and an image prepared without it is read
            # twice (_complete): assume images in what was not looked at. CLAP can wait.
            spaces.update(self.spaces_for["image"])
        self._load_encoders(spaces)

    def _load_encoders(self, spaces: Iterable[str]) -> None:
        """Load these spaces' encoders. A space left unloaded keeps its active model as it is."""
        todo = [s for s in self.spaces if s in set(spaces) and s not in self.encoders]
        self._check_models_present(todo)
        for space in todo:
            self.progress.phase(f"loading {space} model", None)
            enc = index_encoder(space, self.settings)
            self.encoders[space] = enc
            with self.cat.transaction():
                self.cat.ensure_model(enc.info, self._configured_spec(space))
                self.cat.set_setting(f"active_model.{space}", enc.info.model_id)
        self.config = self._worker_config()

    def _models(self) -> dict[str, str]:
        """space -> the model whose vectors count as done: the loaded one, else the active one
        while it is still the configured model (a stale space's old vectors must be redone)."""
        models = {s: e.info.model_id for s, e in self.encoders.items()}
        for space in self.spaces:
            active = self.cat.active_model(space)
            if space not in models and space not in self.stale_spaces and active:
                models[space] = active
        return models

    def _check_models_present(self, spaces: Sequence[str]) -> None:
        """Offline, report every missing model in one message rather than one per run."""
        if not self.settings.offline:
            return
        missing = [st for st in (model_status(sp, self.settings) for sp in spaces) if not st.present]
        if len(missing) < 2:
            return  # none, or one: the backend's own message is the most specific
        what = "; ".join(f"{st.space} model {st.spec} (looked in {st.location})" for st in missing)
        raise ModelMissing(
            f"model weights not found: {what}",
            hint="run `xmr models download` while online, or point XMR_CLIP_MODEL / XMR_CLAP_MODEL "
            "(--clip-model / --clap-model) at local files",
        )

    def _worker_config(self) -> _WorkerConfig:
        clip = self.encoders.get("clip")
        return _WorkerConfig(
            index_dir=str(self.cat.index_dir),
            models=self._models(),
            spaces_for=self.spaces_for,
            image_preprocessor=clip.image_preprocessor() if clip is not None else None,
            audio_window_s=self.options.audio_window_s,
            audio_hop_s=self.options.audio_hop_s,
            max_text_bytes=self.options.max_text_bytes,
            policy=Policy.with_extensions(self.options.text_extensions),
        )

    def _process(self, work: list[_Item]) -> None:
        workers = self.options.workers
        if workers is None:
            workers = max(1, min(4, (os.cpu_count() or 2) - 1))
        if workers == 0 or _decoding_items(work) < 8:
            self._load_needed(work)
            # self.config is read per file: a load in the commit path (_complete) updates it
            self._consume((_prepare(item, self._current_config()) for item in work), len(work))
            return
        import multiprocessing

        # spawn: forking a process that holds torch threads is unsafe. The pool starts
        # before the models load, so the workers' start-up overlaps it.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
            for _ in range(workers):
                pool.submit(int)  # starts a worker process now
            try:
                self._load_needed(work)
                self._consume(self._pooled(pool, workers, work), len(work))
            except BaseException:
                # let the running tasks (one file each) finish: tearing the pool down
                # under its feeder thread prints errors at exit
                pool.shutdown(wait=True, cancel_futures=True)
                raise

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

    def _current_config(self) -> _WorkerConfig:
        if self.config is None:
            self.config = self._worker_config()
        return self.config

    def _pooled(self, pool: ProcessPoolExecutor, workers: int, work: list[_Item]) -> Iterator[_Prepared]:
        # deep enough that workers prepare the next batch while the model encodes this one
        max_in_flight = max(workers * 4, min(self.options.commit_segments, 64))
        pending: dict[Future[_Prepared], int] = {}
        items = iter(work)
        nxt = next(items, None)
        while True:
            # bounded by count and by the files' sizes: a decoded hour of audio is ~700 MB,
            # so a few long recordings must not be decoded all at once
            while (
                nxt is not None
                and len(pending) < max_in_flight
                and (not pending or sum(pending.values()) + nxt.size <= MAX_BYTES_IN_FLIGHT)
            ):
                pending[pool.submit(_prepare, nxt, self._current_config())] = nxt.size
                nxt = next(items, None)
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                del pending[fut]
                yield fut.result()

    # -- committing a batch ---------------------------------------------------------------
    def _commit(self, batch: list[_Prepared]) -> None:
        """Encode what the batch needs, then write it all in one transaction."""
        self._complete(batch)
        encoded: dict[tuple[str, str], tuple[list[SegmentData], np.ndarray, int]] = {}
        failed: dict[int, str] = {}
        for space, enc in self.encoders.items():
            encoded.update(self._encode_space(space, enc, batch, failed))
        written: set[tuple[str, str]] = set()
        models = self._models()
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
                spaces = self.spaces_for.get(p.modality, ())
                if p.modality == "other" or (not spaces and p.modality not in self.options.modalities):
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
                    segs, vecs, dropped = encoded[(p.hash, space)]
                    self.cat.add_encoding(p.hash, space, self.encoders[space].info.model_id, segs, vecs, dropped)
                    written.add((p.hash, space))
                    wrote = True
                    self.report.segments += len(segs)
                if wrote:
                    self.report.embedded_files += 1
                elif p.item.known_hash is None and p.item.old_hash != p.hash:
                    if p.hash in self.vanished_hashes:
                        self.report.moved += 1
                    else:
                        self.report.duplicates += 1
                self._upsert(p, "indexed")
        self._flush_warnings()
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
                    missing.update(set(self.spaces_for.get(p.modality, ())) - p.spaces_done)
            missing = (missing & set(self.spaces)) - set(self.encoders)
            if not missing:
                return
            self._load_encoders(missing)  # adds at least one space each time round: the loop ends
            config = self._current_config()
            for i, p in enumerate(batch):
                if p.undecoded and config.image_preprocessor is not None:
                    again = _prepare(p.item, config)
                    again.bytes_read += p.bytes_read
                    again.opened = again.opened or p.opened
                    batch[i] = again
            total, done = self._indexing
            self.progress.phase("indexing", total)
            self.progress.advance(done)

    def _encode_space(
        self, space: str, enc: Any, batch: list[_Prepared], failed: dict[int, str]
    ) -> dict[tuple[str, str], tuple[list[SegmentData], np.ndarray, int]]:
        """Segments, vectors and the number of junk passages dropped, for every content of the
        batch that lacks this space."""
        out: dict[tuple[str, str], tuple[list[SegmentData], np.ndarray, int]] = {}
        jobs: list[tuple[int, list[SegmentData]]] = []
        dropped: dict[int, int] = {}
        pixels: list[np.ndarray] = []
        windows: list[np.ndarray] = []
        texts: list[str] = []
        planned: set[str | None] = set()
        for i, p in enumerate(batch):
            if p.error or p.skip or space not in self.spaces_for.get(p.modality, ()) or space in p.spaces_done:
                continue
            if p.hash in planned:
                continue  # identical content twice in one batch: embedded once
            if p.modality == "image" and p.pixels is not None:
                jobs.append((i, [SegmentData(kind="image")]))
                pixels.append(p.pixels)
            elif p.modality == "audio" and p.audio_windows is not None:
                segs = [SegmentData(kind="audio_window", start_s=s, end_s=e) for s, e, _ in p.audio_windows]
                if not segs:
                    failed[i] = "no audio to embed"
                    continue
                jobs.append((i, segs))
                windows.extend(w for _, _, w in p.audio_windows)
            elif p.modality == "text" and p.text is not None:
                passages = split_document(Document(p.text, p.pages), enc.split_text)
                kept = [(ps, page) for ps, page in passages if not (p.junk_guard and is_junk(ps.text))]
                if not passages:
                    failed[i] = "no text to embed"
                    continue
                # a content whose passages are all junk gets no segment (but its encoding is recorded)
                dropped[i] = len(passages) - len(kept)
                store = self.options.store_snippets
                segs = [
                    SegmentData(
                        kind="text_passage",
                        char_start=ps.start,
                        char_end=ps.end,
                        text=ps.text if store else None,
                        page=page,
                    )
                    for ps, page in kept
                ]
                jobs.append((i, segs))
                texts.extend(ps.text for ps, _ in kept)
            else:
                failed[i] = f"nothing decoded for the {space} space"
                continue
            planned.add(p.hash)
        # a copy of content that failed above fails the same way
        for i, p in enumerate(batch):
            if i not in failed and p.hash not in planned and not p.error and not p.skip:
                if space in self.spaces_for.get(p.modality, ()) and space not in p.spaces_done:
                    failed[i] = next(
                        (failed[j] for j, q in enumerate(batch) if q.hash == p.hash and j in failed),
                        f"nothing decoded for the {space} space",
                    )
        if not jobs:
            return out
        vec_parts = []
        if pixels:
            vec_parts.append(("image", enc.embed_images(np.stack(pixels))))
        if windows:
            vec_parts.append(("audio", enc.embed_audio(np.stack(windows))))
        if texts:
            vec_parts.append(("text", enc.embed_texts(texts)))
        cursors = {kind: 0 for kind, _ in vec_parts}
        arrays = dict(vec_parts)
        for i, segs in jobs:
            kind = batch[i].modality
            start = cursors.get(kind, 0)
            cursors[kind] = start + len(segs)
            vecs = arrays[kind][start : start + len(segs)] if segs else np.zeros((0, enc.dim), np.float32)
            out[(batch[i].hash, space)] = (segs, vecs, dropped.get(i, 0))
        return out

    def _upsert(self, p: _Prepared, status: str, reason: str | None = None) -> None:
        self._write_row(p.item.path, p.item.root, p.item.size, p.item.mtime_ns, p.hash, p.modality, status, reason)

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
    ) -> None:
        _, old_hash = self.cat.upsert_file(
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

    def _flush_warnings(self) -> None:
        for message in self.warnings:
            self.progress.warn(message)
        self.warnings.clear()

    def _delete(self, rows: Iterable[FileRow]) -> None:
        """Remove vanished files, then content nothing refers to any more."""
        ids = [r.id for r in rows]
        with self.cat.transaction():
            if ids:
                self.report.removed += self.cat.delete_files(ids)
            self.cat.gc_contents(self.replaced_hashes)

    def _embed_concepts(self) -> None:
        """Embed the bridge vocabulary with the loaded models, once per model, when a bridge
        can carry results: once both spaces hold vectors. Before that (say a first folder
        of photos) a search that needs a bridge embeds the concepts itself, once."""
        from xmr import bridge

        for space in ("clip", "clap"):
            model_id = self.cat.active_model(space)
            if not model_id or self.cat.vector_count(space, model_id) == 0:
                return
        if not self.encoders:
            return  # nothing was embedded this run
        concepts = bridge.load_concepts()
        for space in ("clip", "clap"):
            model_id = self.cat.active_model(space)
            if not model_id or bridge.cached_concept_matrix(self.cat, model_id, concepts) is not None:
                continue
            if space not in self.encoders:
                if space not in self.spaces or space in self.stale_spaces:
                    continue  # loading it would switch the space's model without re-embedding
                # once per model: the run that gives the second space its first vectors (say the
                # first audio file of a photo collection) embeds the other space's concepts too
                self._load_encoders([space])
            enc = self.encoders[space]
            if enc.info.model_id == self.cat.active_model(space):
                self.progress.phase(f"embedding bridge concepts ({space})", None)
                bridge.concept_matrix(self.cat, enc, concepts)

    def _checkpoint_ann(self) -> None:
        """Bring each space's ANN cache up to date: after new work, or when a crash
        left it behind (stale state row, replaced file, leftover temp file)."""
        from xmr.store import open_index
        from xmr.store.policy import choose_backend

        ann = paths.ann_dir(self.cat.index_dir)
        backend = choose_backend(self.cat, self.options.codes)  # --codes; recorded in the settings
        for space in self.spaces:
            model_id = self.cat.active_model(space)
            row = self.cat.model_row(model_id) if model_id else None
            if row is None:
                continue
            store = open_index(backend, ann, self.cat, space, model_id, int(row["dim"]))
            # problem(): cheap checks only (state row, size, header, temp files); the checkpoint verifies fully
            if space in self.encoders or store.problem():
                self.progress.phase(f"saving vector index ({space})", None)
                store.checkpoint()


def _segment_estimate(p: _Prepared) -> float:
    """A file's share of a commit batch, in full segments (an image, an audio window, a
    77-token passage). A text counts by its length, so a batch of one-line notes holds a few
    hundred of them: the text encoders sort a call's texts by length and batch them, and
    short calls pad more and run smaller matrices (ms per one-line note, CLIP + CLAP text,
    by call size: 16 -> 28.4, 64 -> 23.2, 256 -> 20.6, 1024 -> 18.3)."""
    if p.audio_windows is not None:
        return len(p.audio_windows)
    if p.text is not None:
        return max(MIN_TEXT_SHARE, len(p.text) / PASSAGE_CHARS)
    return 1 if p.pixels is not None else 0
