"""How ``xmr search`` shows results in a terminal: short paths, never broken inside a name.

Rendering only: the CLI hands over a :class:`xmr.search.SearchResponse` and the
console; nothing here searches, prints on its own or exits.

* A path under the current folder is shown relative to it, else with ``~`` for
  the home folder.
* A path too long for its column is shortened in the middle with ``…``, keeping
  the file name whole where it fits, so no name is ever wrapped onto two lines.
* Where the output is a terminal, each path is an OSC 8 hyperlink to its
  ``file://`` URI (``XMR_HYPERLINKS=0`` turns that off).
* ``--explain`` adds one compact column: route, the model's short name and the
  raw cosine; the full detail is in ``--json``.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from rich.cells import cell_len, get_character_cell_size

ELLIPSIS = "…"
MIN_HEAD_CELLS = 4  # a shortened path keeps the start of its folders only if this much of it fits
# the path column never gets narrower than this (below it the other columns give way)
MIN_PATH_CELLS = 16
# the "where" (snippet, time span) column wraps; it keeps at least this much when space is short
MIN_WHERE_CELLS = 12
MAX_WHERE_CELLS = 60
WHERE_LINES = 3  # a snippet shows at most this many lines


def display_path(path: str, cwd: str | None = None, home: str | None = None) -> str:
    """``path`` relative to ``cwd`` when under it, else with ``~`` for ``home``, else as is."""
    cwd = cwd if cwd is not None else _cwd()
    home = home if home is not None else os.path.expanduser("~")
    if cwd and _under(path, os.path.abspath(cwd)):
        return os.path.relpath(path, cwd)
    if home and home != os.sep and _under(path, home):
        return "~" + os.sep + os.path.relpath(path, home)
    return path


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the current folder was removed: no path is under it
        return ""


def _under(path: str, folder: str) -> bool:
    folder = folder.rstrip(os.sep) or os.sep
    return path.startswith(folder + os.sep) if folder != os.sep else path.startswith(os.sep)


def _left(text: str, cells: int) -> str:
    """The longest start of ``text`` that fits in ``cells`` terminal cells."""
    out, used = [], 0
    for ch in text:
        w = get_character_cell_size(ch)
        if used + w > cells:
            break
        out.append(ch)
        used += w
    return "".join(out)


def _right(text: str, cells: int) -> str:
    """The longest end of ``text`` that fits in ``cells`` terminal cells."""
    return _left(text[::-1], cells)[::-1]


def shorten_middle(path: str, width: int) -> str:
    """``path`` in at most ``width`` cells: cut in the middle with ``…``, the file name kept whole
    where it fits (``fixtures/media/images/animated.gif`` in 24 cells: ``fixtures/m…/animated.gif``).

    A name longer than the column loses the middle of its stem and keeps its extension
    (``a_very_long_recording_name.flac`` in 16 cells: ``a_ver…_name.flac``).
    """
    if width < 1:
        return ""
    if cell_len(path) <= width:
        return path
    if width == 1:
        return ELLIPSIS
    head, sep, name = path.rpartition(os.sep)
    tail = sep + name
    if head and cell_len(tail) + 1 <= width:
        # the whole name, and as much of the folders' start as fits (none, rather than a stub)
        room = width - 1 - cell_len(tail)
        return (_left(head, room) if room >= MIN_HEAD_CELLS else "") + ELLIPSIS + tail
    return _shorten_name(name, width)


def _shorten_name(name: str, width: int) -> str:
    stem, dot, ext = name.rpartition(".")
    keep_ext = dot + ext if stem and cell_len(dot + ext) <= max(1, (width - 1) // 2) else ""
    room = width - 1 - cell_len(keep_ext)
    body = name[: len(name) - len(keep_ext)]
    left_cells = (room + 1) // 2
    left = _left(body, left_cells)
    right = _right(body, room - cell_len(left))
    return left + ELLIPSIS + right + keep_ext


def file_uri(path: str, raw_path: bytes | None = None) -> str:
    """A ``file://`` URI for a path (exact bytes when the name is not UTF-8)."""
    raw = raw_path if raw_path is not None else os.fsencode(path)
    return "file://" + urllib.parse.quote(raw, safe="/")


def hyperlinks_wanted(console: Any) -> bool:
    """OSC 8 links only when writing to a terminal that is not 'dumb', never into a pipe."""
    if os.environ.get("XMR_HYPERLINKS", "").strip().lower() in ("0", "no", "false", "off"):
        return False
    return bool(console.is_terminal) and os.environ.get("TERM", "") != "dumb"


def model_short_name(model_id: str) -> str:
    """The architecture: ``clip:ViT-B-32:laion2b_s34b_b79k`` -> ``ViT-B-32``,
    ``clap:630k-audioset-best:HTSAT-tiny`` -> ``HTSAT-tiny``,
    ``clap:HTSAT-tiny:sha256:…@bf16`` -> ``HTSAT-tiny@bf16``."""
    base, at, tag = model_id.partition("@")
    parts = [p for p in base.split(":") if p]
    space = parts.pop(0) if len(parts) > 1 and parts[0] in ("clip", "clap") else None
    if parts and parts[0] == "hf-hub" and len(parts) > 1:
        parts = [parts[1].rsplit("/", 1)[-1]]
    elif space == "clap" and len(parts) == 2 and parts[1] != "sha256":
        parts = parts[1:]  # clap:<checkpoint>:<audio model>
    short = parts[0] if parts else model_id
    return short + (at + tag if at else "")


def explain_cell(result: Any) -> str:
    b = result.best
    cell = f"{b.route} {model_short_name(b.model_id)} {b.raw:.3f}"
    if getattr(b, "origin", None):  # a passage recognised in the file's pixels
        cell += f" {b.origin}"
    kw = getattr(result, "keyword", None)
    if kw:  # the keyword part of a fused score (xmr.search), beside the semantic one
        cell += f"; keyword: bm25={kw['bm25']:.2f} rank {kw['rank']} +{kw['score']:.2f}"
        cell += f"; semantic: {result.semantic_score:.2f}"
    return cell


def where_cell(hit: Any, modality: str = "") -> str:
    if hit.start_s is not None and modality == "video":  # a moment of a video: 0:42 frame / 1:05 sound
        from xmr.preprocess.video import clock

        return f"{clock(hit.start_s)} " + ("frame" if hit.kind == "image" else "sound")
    if hit.start_s is not None:
        return f"{hit.start_s:.1f}-{hit.end_s:.1f}s"
    page = f"p. {hit.page}: " if hit.page is not None else ""
    if hit.snippet is not None:
        return page + hit.snippet
    if hit.snippet_note is not None:
        return f"{page}({hit.snippet_note})"
    return page.rstrip(": ")


def path_width(paths: list[str], total: int, fixed: list[int], flexible: list[tuple[int, int]]) -> int:
    """Cells the path column gets in a table ``total`` cells wide.

    ``fixed``: the natural widths of the columns that never shrink; ``flexible``: (natural,
    least) widths of the columns that wrap. Paths get their natural width when everything
    fits; else the room left by the others at their natural width, but at least enough for
    every file name that can be shown whole (the others wrap for it), and ``MIN_PATH_CELLS``.
    """
    natural = max((cell_len(p) for p in paths), default=4)
    n_columns = len(fixed) + len(flexible) + 1
    overhead = 3 * (n_columns - 1)  # between two columns: a rule and a space each side (no edge padding)
    rest = total - overhead - sum(fixed)
    beside_natural = rest - sum(nat for nat, _ in flexible)
    if natural <= beside_natural:
        return natural
    most = rest - sum(least for _, least in flexible)
    needs = [cell_len(ELLIPSIS + os.sep + os.path.basename(p)) for p in paths]
    names = max((min(n, cell_len(p)) for n, p in zip(needs, paths, strict=True) if n <= most), default=0)
    return max(MIN_PATH_CELLS, min(natural, max(beside_natural, names)))


def clip_lines(text: str, width: int, console: Any, lines: int = WHERE_LINES) -> str:
    """``text`` wrapped at ``width`` cells, cut after ``lines`` lines with ``…``: a snippet is a glimpse."""
    from rich.text import Text

    wrapped = [line.plain.rstrip() for line in Text(text).wrap(console, max(1, width), overflow="fold")]
    if len(wrapped) <= lines:
        return text
    keep = wrapped[:lines]
    keep[-1] = _left(keep[-1], width - 1).rstrip() + ELLIPSIS
    return "\n".join(keep)


def results_table(response: Any, console: Any, *, explain: bool, all_segments: bool, cwd: str | None = None) -> Any:
    """The rich Table of a search's results, sized for ``console.width``."""
    from rich.style import Style
    from rich.table import Table
    from rich.text import Text

    results = response.results
    shown = [display_path(r.path, cwd) for r in results]
    wheres = [where_cell(r.best, r.modality) for r in results]
    if all_segments:
        wheres += [where_cell(s, r.modality) for r in results for s in r.segments[1:]]
    explains = [explain_cell(r) for r in results] if explain else []

    def widest(cells: list[str], header: str) -> int:
        return max([cell_len(header), *(cell_len(c) for c in cells)])

    fixed = [widest([str(len(results))], "#"), widest(["0.00"], "score"), widest([r.modality for r in results], "type")]
    flexible = [(min(widest(wheres, "where"), MAX_WHERE_CELLS), min(widest(wheres, "where"), MIN_WHERE_CELLS))]
    if explain:  # wraps between its words to leave the file names whole
        words = [w for e in explains for w in e.split()]
        flexible.append((widest(explains, "explain"), widest(words, "explain")))
    width = path_width(shown, console.width, fixed, flexible)
    # what is left goes to "where" (up to its natural width), then to --explain
    rest = console.width - 3 * (len(fixed) + len(flexible)) - sum(fixed) - width
    (where_nat, where_least), *others = flexible
    explain_w = 0
    if others:
        explain_nat, explain_least = others[0]
        explain_w = explain_nat if rest - where_least >= explain_nat else max(explain_least, rest - where_least)
    where_w = max(where_least, min(where_nat, rest - explain_w))

    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("path", no_wrap=True, min_width=width, max_width=width, overflow="ellipsis")
    table.add_column("where", overflow="fold", min_width=where_w, max_width=where_w)
    if explain:
        table.add_column("explain", overflow="fold", min_width=explain_w, max_width=explain_w)
    links = hyperlinks_wanted(console)
    for i, (r, path, where) in enumerate(zip(results, shown, wheres, strict=False), 1):
        style = Style(link=file_uri(r.path, r.raw_path)) if links else None
        row: list[Any] = [str(i), f"{r.score:.2f}", r.modality, Text(shorten_middle(path, width), style=style or "")]
        row.append(clip_lines(where, where_w, console))
        if explain:
            row.append(explain_cell(r))
        table.add_row(*row)
        if all_segments:
            for seg in r.segments[1:]:
                seg_where = clip_lines(where_cell(seg, r.modality), where_w, console)
                table.add_row("", f"{seg.score:.2f}", seg.space, "", seg_where, *([""] if explain else []))
    return table
