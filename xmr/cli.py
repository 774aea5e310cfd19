"""The command line: parse options, call one library function, render its result.

Results go to stdout; progress, warnings and errors to stderr, so pipes stay
clean. Errors are ``XmrError`` subclasses turned into one line and an exit code
(see README "Exit codes"); ``XMR_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from xmr import __version__
from xmr.errors import ExitCode, UsageError, XmrError
from xmr.units import human_bytes


class _XmrGroup(TyperGroup):
    """Turns library errors into one line on stderr and a documented exit code.

    Done here rather than in main() so typer's CliRunner sees the same behaviour.
    """

    def invoke(self, ctx: Any) -> Any:
        from xmr.settings import env_flag

        debug = env_flag("XMR_DEBUG")
        try:
            return super().invoke(ctx)
        except XmrError as exc:
            if debug:
                traceback.print_exc()
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", ExitCode.INTERRUPTED)
        except BrokenPipeError:
            # the reader of our stdout went away (e.g. `| head`): not an error
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(ExitCode.OK) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:
            if debug:
                traceback.print_exc()
            _fail(f"internal error: {type(exc).__name__}: {exc} (XMR_DEBUG=1 shows the traceback)", ExitCode.ERROR)


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"xmr: error: {message}\n")
    sys.stderr.flush()
    raise typer.Exit(int(code))


app = typer.Typer(
    name="xmr",
    cls=_XmrGroup,
    help="Cross-modal retrieval over your folders: index text, images and audio, then search any-to-any.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(help="List, check and download the encoder models.", no_args_is_help=False)
app.add_typer(models_app, name="models")

IndexOpt = Annotated[
    Path | None,
    typer.Option("--index", help="Index directory (default: $XMR_HOME or the per-user data dir).", show_default=False),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or warnings on stderr.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="auto|cpu|cuda|cuda:N|mps (env XMR_DEVICE).", show_default=False)
]
ClipOpt = Annotated[
    str | None,
    typer.Option(
        "--clip-model",
        help="OpenCLIP model: ARCH:TAG, hf-hub:ORG/REPO, local-dir:FOLDER or ARCH:/path/to/weights "
        "(env XMR_CLIP_MODEL; default ViT-B-32:laion2b_s34b_b79k).",
        show_default=False,
    ),
]
ClapOpt = Annotated[
    str | None,
    typer.Option(
        "--clap-model",
        help="LAION-CLAP checkpoint name (e.g. 630k-audioset-best.pt) or path (env XMR_CLAP_MODEL).",
        show_default=False,
    ),
]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        "--precision",
        help="fp32|bf16|int8 on CPU (env XMR_PRECISION; default fp32 to index, the index's own to search; "
        "CUDA runs fp16).",
        show_default=False,
    ),
]
BatchOpt = Annotated[
    int | None, typer.Option("--batch-size", min=1, help="Encoder batch size (env XMR_BATCH_SIZE).", show_default=False)
]


def _stderr_console(quiet: bool = False) -> Any:
    from rich.console import Console

    # markup off: file names such as "a[/x]" are text, never markup
    return Console(stderr=True, quiet=quiet, highlight=False, soft_wrap=True, markup=False)


def _stdout_console() -> Any:
    from rich.console import Console

    # soft_wrap: never break long lines (paths) when stdout is a pipe
    return Console(highlight=False, soft_wrap=True, markup=False)


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _settings(
    device: str | None,
    clip_model: str | None,
    clap_model: str | None,
    batch_size: int | None,
    precision: str | None = None,
) -> Any:
    from xmr.settings import Settings

    return Settings.from_env(
        device=device, clip_model=clip_model, clap_model=clap_model, batch_size=batch_size, precision=precision
    )


def _index_dir(index: Path | None) -> Path:
    from xmr import paths

    return paths.index_dir(index)


def _server_recorded(index_dir: Path) -> bool:
    """Whether a server has left its address in the index (no server: http.client is never imported)."""
    from xmr.server.address import address_path

    return address_path(index_dir).is_file()


class _RichProgress:
    """Renders the core's progress callbacks on stderr (only on a terminal)."""

    def __init__(self, quiet: bool):
        self.console = _stderr_console(quiet)
        self.quiet = quiet
        self.enabled = not quiet and self.console.is_terminal
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> _RichProgress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def phase(self, name: str, total: int | None) -> None:
        if self.bar is None:
            return
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(name, total=total, rate="")

    def advance(self, n: int = 1) -> None:
        if self.bar is None or self.task is None:
            return
        self.bar.advance(self.task, n)
        task = self.bar.tasks[-1]
        if task.speed:
            self.bar.update(self.task, rate=f"{task.speed:.1f} files/s")

    def detail(self, text: str) -> None:
        """Where a long file has got to (a scanned PDF's page), in the rate column."""
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, rate=text)

    def warn(self, message: str) -> None:
        if not self.quiet:
            from rich.text import Text

            self.console.print(Text.assemble(("warning: ", "yellow"), message))


# -- index -------------------------------------------------------------------------------------


@app.command("index")
def index_cmd(
    paths_: Annotated[list[Path], typer.Argument(metavar="PATH...", help="Folders or files to index.")],
    index: IndexOpt = None,
    include_hidden: Annotated[bool, typer.Option("--include-hidden", help="Index hidden files and folders.")] = False,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Gitignore-style pattern to skip (repeatable).")
    ] = None,
    follow_symlinks: Annotated[bool, typer.Option("--follow-symlinks", help="Follow symbolic links.")] = False,
    modalities: Annotated[
        str | None,
        typer.Option(
            "--modalities",
            help="Comma-separated subset of image,audio,text (and any added media kind); default: all.",
            show_default=False,
        ),
    ] = None,
    retry_errors: Annotated[bool, typer.Option("--retry-errors", help="Try failed files again.")] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="If another xmr process is writing the index, wait for it (else exit 12).")
    ] = False,
    workers: Annotated[
        int | None, typer.Option("--workers", min=0, help="Decoding processes (0: none).", show_default=False)
    ] = None,
    text_ext: Annotated[
        list[str] | None,
        typer.Option(
            "--text-ext",
            metavar="EXT",
            help="Also index files with this extension as plain-text documents (repeatable; env XMR_TEXT_EXT).",
        ),
    ] = None,
    store_snippets: Annotated[
        bool,
        typer.Option(
            "--store-snippets", help="Keep passages' text in the catalogue (default: offsets only, read when shown)."
        ),
    ] = False,
    codes: Annotated[
        str | None,
        typer.Option(
            "--codes",
            metavar="binary|none|auto",
            help="Vector index: 1-bit codes rescored exactly (binary), the hnswlib graph (none), or codes from "
            "2M vectors a space (auto, the default). Kept for later runs; env XMR_CODES. See docs/codes.md.",
            show_default=False,
        ),
    ] = None,
    ocr: Annotated[
        str | None,
        typer.Option(
            "--ocr",
            metavar="auto|all|off",
            help="Read text in images and scanned PDFs: images likely to hold text and PDFs without a text "
            "layer (auto, the default), every image (all), or none (off). Kept for later runs; env XMR_OCR.",
            show_default=False,
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            metavar="STORE",
            help="Vector store to keep from now on: hnswlib, milvus://HOST:PORT (token: XMR_MILVUS_TOKEN) "
            "or milvus-lite:PATH.db (see docs/scaling.md).",
            show_default=False,
        ),
    ] = None,
    rebuild_store: Annotated[
        bool, typer.Option("--rebuild-store", help="Refill the vector store (Milvus) from the catalogue.")
    ] = False,
    executor: Annotated[
        str,
        typer.Option("--executor", metavar="EXEC", help="Where decoding and embedding run: local, or ray[://ADDRESS]."),
    ] = "local",
    device: DeviceOpt = None,
    clip_model: ClipOpt = None,
    clap_model: ClapOpt = None,
    batch_size: BatchOpt = None,
    precision: PrecisionOpt = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep indexing what changes under PATH... until Ctrl-C (docs/watch.md).")
    ] = False,
    poll: Annotated[bool, typer.Option("--poll", help="With --watch: poll instead of OS notifications.")] = False,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0.1, help="With --watch, when polling: seconds between scans.")
    ] = 5.0,
    video_every: Annotated[
        float, typer.Option("--video-every", min=0.1, help="Videos: a frame at least every this many seconds.")
    ] = 2.0,
    video_max_frames: Annotated[
        int, typer.Option("--video-max-frames", min=1, help="Videos: at most this many frames (long ones spread).")
    ] = 300,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Crawl PATH... and add new or changed files to the index (unchanged files are not read)."""
    from xmr import media
    from xmr.documents import normalise_extension
    from xmr.indexer import IndexOptions
    from xmr.indexer import index as run_index

    mods = [m.strip() for m in modalities.split(",") if m.strip()] if modalities is not None else list(media.names())
    settings = _settings(device, clip_model, clap_model, batch_size, precision)
    try:
        text_exts = sorted({normalise_extension(e) for e in [*settings.text_extensions, *(text_ext or [])]})
    except ValueError as exc:
        raise UsageError(f"--text-ext: {exc}") from None
    options = IndexOptions(
        include_hidden=include_hidden,
        excludes=exclude or [],
        follow_symlinks=follow_symlinks,
        modalities=mods,
        retry_errors=retry_errors,
        workers=workers,
        wait=wait,
        text_extensions=text_exts,
        store_snippets=store_snippets,
        codes=_codes_choice(codes),
        ocr=_ocr_choice(ocr),
        video_every_s=video_every,
        video_max_frames=video_max_frames,
        store=store,
        rebuild_store=rebuild_store,
    )
    if poll and not watch:
        raise UsageError("--poll only applies with --watch")
    if watch and executor != "local":
        raise UsageError("--watch runs locally; drop --executor")
    if watch:
        from xmr.cli_watch import run_watch
        from xmr.watch import WatchOptions

        with _RichProgress(quiet) as progress:
            watching = WatchOptions(poll=poll, poll_interval_s=poll_interval)
            run_watch(
                paths_,
                index_dir=_index_dir(index),
                settings=settings,
                options=options,
                watch=watching,
                progress=progress,
                console=_stderr_console(quiet),
                quiet=quiet,
                json_out=json_out,
            )
        return
    embedder = None
    if executor != "local":
        from xmr.index.ray_embedder import ray_embedder

        embedder = ray_embedder(executor, settings, options)
    with _RichProgress(quiet) as progress:
        report = run_index(
            [str(p) for p in paths_],
            index_dir=_index_dir(index),
            settings=settings,
            options=options,
            progress=progress,
            embedder=embedder,
        )
    if json_out:
        _emit_json({"run_id": report.run_id, "roots": report.roots, **report.counts(), "errors": report.errors})
        return
    if not quiet:
        parts = [
            f"{report.embedded_files} indexed",
            f"{report.unchanged} unchanged",
            f"{report.moved} moved",
            f"{report.duplicates} duplicate",
            f"{report.removed} removed",
            f"{report.skipped} skipped",
            f"{report.failed} failed",
        ]
        if report.pending:
            parts.append(f"{report.pending} pending")
        if report.metadata_only:
            parts.append(f"metadata read for {report.metadata_only} unchanged")
        msg = ", ".join(parts) + f" in {report.elapsed_s:.1f}s"
        if report.failed:
            msg += " (see 'xmr errors')"
        if report.skipped_by_reason:
            msg += "\nskipped: " + _reasons(report.skipped_by_reason)
        _stderr_console().print(msg)


def _ocr_choice(ocr: str | None) -> str | None:
    from xmr.ocr.policy import check_mode, mode_from_env

    return check_mode(ocr) or mode_from_env()


def _codes_choice(codes: str | None) -> str | None:
    from xmr.store.policy import check_codes, codes_from_env

    return check_codes(codes) or codes_from_env()


# -- search ------------------------------------------------------------------------------------


@app.command("search")
def search_cmd(
    query: Annotated[
        str | None,
        typer.Argument(
            help='Text query; combine parts with + and - ("dog" + "beach" - "people"), weight with 2:cat, '
            "'-' reads standard input.",
            show_default=False,
        ),
    ] = None,
    image: Annotated[list[str] | None, typer.Option("--image", help="Query image (repeatable, W:PATH).")] = None,
    audio: Annotated[list[str] | None, typer.Option("--audio", help="Query audio (repeatable, W:PATH).")] = None,
    video: Annotated[
        list[str] | None, typer.Option("--video", help="Query video: its frames and its sound (repeatable, W:PATH).")
    ] = None,
    text_file: Annotated[
        list[str] | None, typer.Option("--text-file", help="Query text file (repeatable, W:PATH).")
    ] = None,
    top: Annotated[int, typer.Option("-k", "--top", min=1, help="Number of results.")] = 10,
    type_: Annotated[
        list[str] | None,
        typer.Option(
            "--type", help="Only results of this type: image, audio, text or an added media kind (repeatable)."
        ),
    ] = None,
    under: Annotated[
        list[Path] | None, typer.Option("--under", help="Only files under this folder (repeatable).")
    ] = None,
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Drop results whose calibrated score is lower.")
    ] = None,
    all_segments: Annotated[
        bool, typer.Option("--all-segments", help="Show every matching segment of a file, not only the best.")
    ] = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show route, model and raw cosine per result (--json: the full detail).")
    ] = False,
    exact: Annotated[bool, typer.Option("--exact", help="Exhaustive search instead of the ANN index.")] = False,
    concepts: Annotated[
        Path | None, typer.Option("--concepts", help="Extra bridge concepts, one per line (env XMR_CONCEPTS).")
    ] = None,
    json_out: JsonOpt = False,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="One JSON result per line.")] = False,
    paths_out: Annotated[bool, typer.Option("--paths", help="Only the paths, one per line.")] = False,
    null: Annotated[bool, typer.Option("-0", "--null", help="Only the paths, NUL-separated (for xargs -0).")] = False,
    index: IndexOpt = None,
    device: DeviceOpt = None,
    no_server: Annotated[
        bool, typer.Option("--no-server", help="Search in this process even if 'xmr serve' runs on the index.")
    ] = False,
    precision: PrecisionOpt = None,
    quiet: QuietOpt = False,
    preview: Annotated[
        bool, typer.Option("--preview", help="Show image results inline (kitty, iTerm2, WezTerm; never into a pipe).")
    ] = False,
    after: Annotated[
        str | None, typer.Option("--after", help="Only files taken (else modified) on or after DATE (YYYY-MM-DD).")
    ] = None,
    before: Annotated[
        str | None, typer.Option("--before", help="Only files taken (else modified) before DATE.")
    ] = None,
    camera: Annotated[
        str | None, typer.Option("--camera", help="Only photos whose camera make or model contains TEXT.")
    ] = None,
    near: Annotated[
        str | None, typer.Option("--near", help="Only photos taken within KM (default 1) of LAT,LON[,KM].")
    ] = None,
    sort: Annotated[str, typer.Option("--sort", help="Order of the top k: score, or date (newest first).")] = "score",
    semantic_only: Annotated[bool, typer.Option("--semantic-only", help="Rank by meaning alone.")] = False,
    keyword_only: Annotated[
        bool, typer.Option("--keyword-only", help="Rank by words in names, folders, titles and tags alone.")
    ] = False,
) -> None:
    """Search the index with text, images, audio or text files; one ranked list across all types."""
    from xmr.query import parse_query

    if sum([json_out, jsonl, paths_out, null]) > 1:
        raise UsageError("choose one of --json, --jsonl, --paths and -0")
    parts = parse_query(query, images=image, audios=audio, text_files=text_file, stdin=sys.stdin, videos=video)
    from xmr.filters import filters_from
    from xmr.query import keyword_text

    if semantic_only and keyword_only:
        raise UsageError("choose one of --semantic-only and --keyword-only")
    match = "semantic" if semantic_only else "keyword" if keyword_only else "both"
    filters = filters_from(after, before, camera, near)
    words = keyword_text(query) if query and query.strip() != "-" else None
    under_ = [os.path.abspath(os.path.expanduser(str(u))) for u in under or []]
    index_dir = _index_dir(index)
    response: Any = None
    # a running server has the models warm; --concepts, --device and --precision are this process's own
    if not no_server and concepts is None and device is None and precision is None and _server_recorded(index_dir):
        from xmr.client import remote_search

        request = {"k": top, "type": type_ or [], "under": under_, "min_score": min_score, "exact": exact}
        request |= {"explain": explain, "all_segments": all_segments}
        request |= {"after": after, "before": before, "camera": camera, "near": near, "sort": sort, "match": match}
        request["keywords"] = words
        response = remote_search(index_dir, parts, request)
    if response is None:
        from xmr.search import SearchOptions, search

        options = SearchOptions(
            k=top,
            types=type_ or [],
            under=under_,
            min_score=min_score,
            all_segments=all_segments,
            exact=exact,
            concepts_file=str(concepts) if concepts else None,
            filters=filters,
            sort=sort,
            match=match,
            keyword_text=words,
        )
        settings = _settings(device, None, None, None, precision)
        response = search(
            parts,
            index_dir=index_dir,
            settings=settings,
            options=options,
            # a console made only for a notice: importing rich costs a one-shot query 40-70 ms
            notify=lambda message: _stderr_console(quiet).print(f"xmr: {message}", markup=False, highlight=False),
        )
    if json_out:
        _emit_json(response.as_dict(explain=explain, all_segments=all_segments))
    elif jsonl:
        for r in response.results:
            line = json.dumps(r.as_dict(explain=explain, all_segments=all_segments), ensure_ascii=False, default=str)
            sys.stdout.write(line + "\n")
    elif paths_out or null:
        # exact names, as bytes: a name that is not UTF-8 still reaches `xargs -0 ls` intact
        end = b"\0" if null else b"\n"
        sys.stdout.flush()
        sys.stdout.buffer.write(b"".join(r.path_bytes + end for r in response.results))
        sys.stdout.buffer.flush()
    elif sys.stdout.isatty():
        _render_results_table(response, explain=explain, all_segments=all_segments)
        if preview:
            from xmr.cli_preview import show_previews

            show_previews(response.results)
    else:
        # plain "score<TAB>path" lines for pipes, like rclip
        sys.stdout.flush()
        sys.stdout.buffer.write(b"".join(b"%.3f\t%s\n" % (r.score, r.path_bytes) for r in response.results))
        sys.stdout.buffer.flush()
    if not response.results and not quiet:
        _stderr_console().print("no results")


def _reasons(by_reason: dict[str, int]) -> str:
    ranked = sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{n} {reason}" for reason, n in ranked)


def _render_results_table(response: Any, *, explain: bool, all_segments: bool) -> None:
    from xmr.render import results_table

    console = _stdout_console()
    console.print(results_table(response, console, explain=explain, all_segments=all_segments))
    if explain:
        for note in response.notes:
            console.print(f"note: {note}")


# -- serve ---------------------------------------------------------------------------------------


@app.command("serve")
def serve_cmd(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (loopback only, unless --allow-remote).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free port).")] = 8765,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in a web browser.")] = False,
    idle_unload: Annotated[
        float, typer.Option("--idle-unload", min=0, help="Unload the models after this many idle minutes (0: never).")
    ] = 15.0,
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="Allow a --host other machines can reach (prints a warning).")
    ] = False,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.001, help="Largest upload accepted.")] = 32.0,
    watch: Annotated[
        list[Path] | None,
        typer.Option("--watch", metavar="PATH", help="Keep PATH indexed while serving (repeatable; docs/watch.md)."),
    ] = None,
    index: IndexOpt = None,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Serve the index: a JSON API and a web page, with the models kept warm; 'xmr search' uses it."""
    from xmr.server.run import ServeOptions, check_host, is_loopback, serve

    check_host(host, allow_remote)
    err = _stderr_console(quiet)
    if not is_loopback(host):
        _stderr_console().print(
            f"warning: listening on {host}: anyone who can reach it and has the token can search and read "
            "the indexed files; plain HTTP, so the token and the files cross the network unencrypted"
        )

    def ready(url: str) -> None:
        err.print(f"xmr serve: {url}  (Ctrl-C stops)")
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    options = ServeOptions(
        host=host,
        port=port,
        allow_remote=allow_remote,
        idle_unload_min=idle_unload,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        watch=[str(p) for p in watch or []],
    )
    serve(
        _index_dir(index),
        _settings(device, None, None, None),
        options,
        on_ready=ready,
        notify=lambda message: err.print(f"xmr serve: {message}"),
    )


# -- eval --------------------------------------------------------------------------------------


@app.command("eval")
def eval_cmd(
    collection: Annotated[
        Path | None, typer.Argument(help="Folder of labelled files (labels: parent folder names or --labels).")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="CSV of path,label[,caption] rows, paths relative to the CSV.")
    ] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the reliability diagram (PNG) here.")] = None,
    depth: Annotated[int, typer.Option("--depth", min=10, help="Results fetched per query; mAP is over these.")] = 100,
    max_queries: Annotated[
        int, typer.Option("--max-queries", min=0, help="At most this many queries per task (a fixed sample; 0: all).")
    ] = 200,
    bins: Annotated[int, typer.Option("--bins", min=1, help="Calibration bins (ECE, reliability diagram).")] = 10,
    fusion: Annotated[
        bool,
        typer.Option(
            "--fusion",
            help="Also rank the label queries by keyword only, the keyword + semantic fusion in use, and RRF.",
        ),
    ] = False,
    compare: Annotated[
        tuple[Path, Path] | None,
        typer.Option("--compare", metavar="A.json B.json", help="Compare two saved --json reports instead."),
    ] = None,
    tolerance: Annotated[
        float, typer.Option("--tolerance", min=0, help="With --compare: flag quality/ECE changes larger than this.")
    ] = 0.02,
    speed_tolerance: Annotated[
        float, typer.Option("--speed-tolerance", min=0, help="With --compare: relative tolerance for speed and sizes.")
    ] = 0.25,
    index: Annotated[
        Path | None,
        typer.Option(
            "--index",
            help="Index to build or update (default: a temporary one, deleted afterwards).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=0, help="Decoding processes (0: none).", show_default=False)
    ] = None,
    device: DeviceOpt = None,
    clip_model: ClipOpt = None,
    clap_model: ClapOpt = None,
    batch_size: BatchOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Measure retrieval quality, speed, memory and calibration on a labelled collection (or --compare two runs)."""
    if compare is not None:
        from xmr.errors import Regressed
        from xmr.evaluate.compare import compare_reports
        from xmr.evaluate.report import render_comparison

        if collection is not None:
            raise UsageError("give a COLLECTION or --compare A.json B.json, not both")
        diff = compare_reports(*compare, tolerance=tolerance, speed_tolerance=speed_tolerance)
        if json_out:
            _emit_json(diff)
        else:
            _stdout_console().print(render_comparison(diff))
        if diff["worse"]:
            raise Regressed(f"{diff['worse']} metric(s) worse beyond the tolerance")
        return
    if collection is None:
        raise UsageError("give the COLLECTION folder to evaluate (or --compare A.json B.json)")
    from xmr.evaluate import EvalOptions, evaluate
    from xmr.evaluate.report import render_report

    options = EvalOptions(
        labels_csv=str(labels) if labels else None,
        depth=depth,
        bins=bins,
        max_queries=max_queries or None,
        workers=workers,
        plot=str(plot) if plot else None,
        fusion=fusion,
    )
    settings = _settings(device, clip_model, clap_model, batch_size)
    with _RichProgress(quiet) as progress:
        index_dir = _index_dir(index) if index else None
        report = evaluate(str(collection), index_dir=index_dir, settings=settings, options=options, progress=progress)
    if json_out:
        _emit_json(report.as_dict())
    else:
        _stdout_console().print(render_report(report.as_dict()))


# -- status / errors / info / remove ----------------------------------------------------------------


@app.command("status")
def status_cmd(
    index: IndexOpt = None,
    json_out: JsonOpt = False,
    check: bool = typer.Option(
        False,
        "--check",
        help="also verify everything: PRAGMA integrity_check, every vector finite and unit-norm, every vector "
        "index file's checksum (a damaged one is removed and rebuilt by the next 'xmr index'); exits 11 on damage",
    ),
) -> None:
    """Show the index location, what it holds, the models that made it and the last run."""
    from xmr import core

    data = core.status(_index_dir(index))
    if check and data["exists"]:
        data["check"] = core.check(_index_dir(index))
    if json_out:
        _emit_json(data)
        _fail_on_damage(data)
        return
    out = _stdout_console()
    out.print(f"index: {data['index']}")
    if not data["exists"]:
        out.print("empty: nothing indexed yet (run 'xmr index PATH')")
        return
    by_mod = ", ".join(f"{n} {m}" for m, n in data["files_by_modality"].items()) or "none"
    by_status = ", ".join(f"{n} {s}" for s, n in data["files_by_status"].items())
    out.print(f"files: {data['files']} ({by_mod}); status: {by_status}")
    if data.get("skipped_by_reason"):
        out.print(f"skipped: {_reasons(data['skipped_by_reason'])}")
    for sp in data["spaces"]:
        kinds = ", ".join(f"{n} {k}" for k, n in sp["segments_by_kind"].items())
        active = "" if sp["active"] else " (inactive)"
        out.print(f"space {sp['space']}: {sp['vectors']} vectors [{kinds}] by {sp['model_id']}{active}")
    out.print(
        f"catalogue: {human_bytes(data['catalogue_bytes'])}; vector index files: {human_bytes(data['ann_bytes'])}"
    )
    if "vector_index" in data:
        vi = data["vector_index"]
        out.print(f"vector index: {vi['backend']}; codes: {vi['codes']} ({vi['choice']})")
    run = data.get("last_run")
    if run:
        c = run["counts"]
        out.print(
            f"last run: {run['started']} {run['status']}: {c.get('embedded_files', 0)} indexed, "
            f"{c.get('unchanged', 0)} unchanged, {c.get('removed', 0)} removed, {c.get('failed', 0)} failed"
        )
    if "check" in data:
        ch = data["check"]["checked"]
        out.print(
            f"check: integrity {ch['integrity_check']}; {ch['vectors']} vectors; {ch['ann_files']} vector index files"
        )
    _fail_on_damage(data)


def _fail_on_damage(data: dict[str, Any]) -> None:
    problems = data.get("check", {}).get("problems")
    if problems:
        from xmr.errors import IndexDamaged

        raise IndexDamaged("index damaged: " + "; ".join(problems), hint="see 'xmr status --check --json'")


@app.command("errors")
def errors_cmd(index: IndexOpt = None, json_out: JsonOpt = False) -> None:
    """List files that could not be indexed, and why."""
    from xmr import core

    rows = core.errors(_index_dir(index))
    if json_out:
        _emit_json(rows)
        return
    for r in rows:
        sys.stdout.write(f"{r['path']}: {r['error']}\n")


@app.command("info")
def info_cmd(
    path: Annotated[Path, typer.Argument(help="An indexed file.")], index: IndexOpt = None, json_out: JsonOpt = False
) -> None:
    """Show the full provenance of one indexed file: content hash, segments, models, vectors."""
    from xmr import core

    data = core.info(str(path), _index_dir(index))
    if json_out:
        _emit_json(data)
        return
    out = _stdout_console()
    for key in ("path", "modality", "status", "error", "size", "hash", "first_seen", "last_seen"):
        if data.get(key) is not None:
            label = "reason" if key == "error" and data.get("status") == "skipped" else key
            out.print(f"{label}: {data[key]}")
    out.print(f"modified: {data['modified']}")
    for key, value in data.get("metadata", {}).items():
        out.print(f"{key.replace('_', ' ')}: {value}", markup=False)
    for dup in data["duplicates"]:
        out.print(f"same content: {dup}")
    decoding = data.get("decoding")
    if decoding:  # a video: how its frames were sampled, what was kept and dropped, its sound windows
        s = decoding["sampling"]
        out.print(
            f"sampling: a frame every {decoding['interval_s']:g} s (setting {s['every_s']:g} s, at most "
            f"{s['max_frames']} frames), scene cut at {s['scene_cut']:g}, same-as-previous below "
            f"{s['same_as_previous']:g}{', keyframes only' if decoding['keyframes_only'] else ''}"
        )
        out.print(
            f"frames: {decoding['frames_kept']} kept, {decoding['frames_dropped_as_same']} dropped as the same "
            f"as the previous, {decoding['frames_dropped_over_cap']} over the cap, {decoding['scene_cuts']} scene "
            f"cut(s), {decoding['frames_decoded']} decoded of {decoding['duration_s']:g} s"
        )
        sound = f"{decoding['audio_windows']} window(s)" if decoding["audio_track"] else "no audio track"
        out.print(f"sound: {sound}")
    if data.get("ocr"):
        _print_ocr(out, data["ocr"])
    for enc in data["encodings"]:
        model = enc["model"] or {}
        dropped = f", {enc['dropped_as_junk']} passage(s) dropped as junk" if enc.get("dropped_as_junk") else ""
        if enc.get("dropped_as_junk") and data.get("modality") == "video":
            dropped = f", {enc['dropped_as_junk']} frame(s) dropped (nearly the previous kept frame, or over the cap)"
        out.print(
            f"{enc['space']}: {enc['n_segments']} segment(s) by {model.get('id')} ({model.get('spec')}){dropped}"
        )
        for seg in enc["segments"]:
            where = ""
            if seg["start_s"] is not None:
                where = f" {seg['start_s']:.1f}-{seg['end_s']:.1f}s"
            elif seg["char_start"] is not None:
                where = f" chars {seg['char_start']}-{seg['char_end']}"
                if seg.get("page") is not None:
                    where += f" page {seg['page']}"
            kind = seg["kind"] + (f" ({seg['origin']})" if seg.get("origin") else "")
            out.print(f"  #{seg['seq']} {kind}{where} vector {seg['vector_id']} dim {seg['dim']}")


def _print_ocr(out: Any, ocr: dict[str, Any]) -> None:
    """`xmr info`: how text was recognised in the file, and each line with its confidence."""
    models = ", ".join(f"{role} {name}" for role, name in sorted(ocr["models"].items()))
    settings = ocr["settings"]
    what = f"ocr: {ocr['status']}" + (f" ({ocr['reason']})" if ocr.get("reason") else "")
    out.print(f"{what}; {ocr['n_lines']} line(s) in {ocr['elapsed_s'] or 0:g} s", markup=False)
    if models:
        out.print(f"ocr models: {models}", markup=False)
    out.print("ocr settings: " + ", ".join(f"{k} {v}" for k, v in sorted(settings.items())), markup=False)
    if ocr.get("text_source"):
        out.print(f"ocr text: {ocr['text_source']}", markup=False)
    for ln in ocr["lines"]:
        page = f"p. {ln['page']} " if ln.get("page") is not None else ""
        text = ln["text"] if ln.get("text") is not None else "(text not stored)"
        out.print(f"  {page}[{ln['score']:.3f}] {text}", markup=False)


@app.command("dupes")
def dupes_cmd(
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Least cosine of a pair (default 0.90 images, 0.95 audio)."),
    ] = None,
    type_: Annotated[
        list[str] | None, typer.Option("--type", help="image or audio (repeatable; default both).")
    ] = None,
    index: IndexOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List groups of near-duplicate images and audio re-encodes (deletes nothing)."""
    from xmr.dupes import find_dupes

    groups = find_dupes(index_dir=_index_dir(index), types=type_ or ("image", "audio"), threshold=threshold)
    if json_out:
        _emit_json({"groups": [g.as_dict() for g in groups]})
        return
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold")
    for col in ("group", "type", "similarity", "path"):
        table.add_column(col, overflow="fold", justify="right" if col in ("group", "similarity") else "left")
    for i, g in enumerate(groups, 1):
        for j, f in enumerate(g.files):
            table.add_row(str(i) if j == 0 else "", g.modality if j == 0 else "", f"{f['similarity']:.3f}", f["path"])
    if groups:
        _stdout_console().print(table)
    _stderr_console().print(f"{len(groups)} group(s) of near duplicates; nothing was deleted")


@app.command("remove")
def remove_cmd(
    paths_: Annotated[list[str], typer.Argument(metavar="PATH...", help="Files or folders to forget.")],
    index: IndexOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Remove files (or everything under a folder) from the index; the files themselves are untouched."""
    from xmr import core

    result = core.remove(paths_, _index_dir(index))
    if json_out:
        _emit_json(result)
        return
    err = _stderr_console(quiet)
    if result.get("notice"):
        err.print(f"warning: {result['notice']}")
    for p in result["not_indexed"]:
        err.print(f"warning: {p}: not in the index")
    err.print(f"removed {result['removed']} file(s)")


# -- models ---------------------------------------------------------------------------------------


@models_app.callback(invoke_without_command=True)
def models_cmd(
    ctx: typer.Context,
    clip_model: ClipOpt = None,
    clap_model: ClapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List the configured models and where their weights resolve from."""
    if ctx.invoked_subcommand is not None:
        return
    from xmr.encoders import model_status
    from xmr.spaces import SPACES

    settings = _settings(None, clip_model, clap_model, None)
    rows = [model_status(space, settings) for space in SPACES]
    if json_out:
        from dataclasses import asdict

        _emit_json([asdict(r) for r in rows])
        return
    out = _stdout_console()
    for r in rows:
        state = "present" if r.present else "MISSING"
        size = human_bytes(r.size_bytes) if r.size_bytes else ""
        out.print(f"{r.space}: {r.spec} [{state}] {r.source} {r.location or ''} {size}".rstrip())
        if r.sha256:
            out.print(f"  sha256 {r.sha256}")
        if r.detail:
            out.print(f"  {r.detail}")


@models_app.command("download")
def models_download_cmd(
    clip_model: ClipOpt = None,
    clap_model: ClapOpt = None,
    space: Annotated[str | None, typer.Option("--space", help="Only this space: clip or clap.")] = None,
) -> None:
    """Fetch the configured models' weights into the local cache (needs network)."""
    from xmr.encoders import download_model
    from xmr.spaces import SPACES

    settings = _settings(None, clip_model, clap_model, None)
    spaces = [space] if space else list(SPACES)
    for sp in spaces:
        r = download_model(sp, settings)
        _stderr_console().print(f"{r.space}: {r.spec} -> {r.location}")


@models_app.command("prepare")
def models_prepare_cmd(index: IndexOpt = None, json_out: JsonOpt = False) -> None:
    """Export the index's models as per-tower query encoders now (otherwise the first search does it)."""
    from xmr import core

    done = core.prepare_query_encoders(_index_dir(index), _settings(None, None, None, None))
    if json_out:
        _emit_json(done)
        return
    for model_id, towers in done.items():
        what = ", ".join(towers) if towers else "already prepared"
        _stderr_console().print(f"{model_id}: {what}")


# -- entry point -------------------------------------------------------------------------------------


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"xmr {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version.")
    ] = None,
) -> None:
    """Cross-modal retrieval over your folders: index text, images and audio, then search any-to-any."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    app(args=argv, prog_name="xmr")
