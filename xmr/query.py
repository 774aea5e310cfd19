"""Parsing of combined queries, in the style of rclip.

    "dog" + "beach" - "people"     several parts, added or subtracted
    2:cat                          a weight (any float) before a colon
    "sunset" + ./photo.jpg         a part that names an existing file is a media query
    -                              the query text is read from standard input

``--image``, ``--audio`` and ``--text-file`` add media parts (repeatable, also
``W:PATH`` for a weight). Every part ends up as a :class:`QueryPart`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from xmr.errors import MediaError, PathNotFound, UsageError

_WEIGHT = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+)):(.+)$", re.S)


@dataclass(frozen=True)
class QueryPart:
    kind: str  # text, or a media kind's query kind (image | audio | text_file ...: xmr.media.query_kinds())
    value: str  # the text, or the absolute path of the query file
    weight: float = 1.0
    # False for what must leave no trace (an upload to the server): no query or answer cache entry
    cacheable: bool = True

    def label(self) -> str:
        w = "" if self.weight == 1.0 else f"{self.weight:g}:"
        from xmr.catalogue import path_key

        shown = self.value if self.kind == "text" else f"{self.kind}:{path_key(self.value)[0]}"
        return f"{w}{shown}"


def _split_terms(query: str) -> list[tuple[float, str, bool]]:
    """Split on standalone + and - (whitespace on both sides) outside double quotes.

    Apostrophes are ordinary characters ("don't stop" is one term); a term in
    double or single quotes as a whole has them removed.
    """
    terms: list[tuple[float, str]] = []  # (sign, raw term); returned with a "was quoted" flag
    sign, buf, quoted = 1.0, [], False
    text = f" {query.strip()} "
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "+-" and text[i - 1].isspace() and i + 1 < len(text) and text[i + 1].isspace():
            term = "".join(buf).strip()
            if term:
                terms.append((sign, term))
            sign, buf = (-1.0 if ch == "-" else 1.0), []
            i += 1
            continue
        buf.append(ch)
        i += 1
    if quoted:
        raise UsageError("cannot parse query: unbalanced double quote")
    term = "".join(buf).strip()
    if term:
        terms.append((sign, term))
    return [(sg, _unquote(t), _unquote(t) != t) for sg, t in terms]


def keyword_text(query: str) -> str:
    """The keyword index's side of a query: its positively weighted terms, a quoted term kept
    in quotes (an FTS5 phrase: xmr.catalogue.keywords.fts_query)."""
    words = []
    for sign, term, quoted in _split_terms(query):
        weight, value = _weighted(term)
        if sign * weight > 0 and value:
            words.append(f'"{value}"' if quoted else value)
    return " ".join(words)


def _unquote(term: str) -> str:
    m = _WEIGHT.match(term)
    if m:
        return f"{m.group(1)}:{_unquote(m.group(2).strip())}"
    if len(term) >= 2 and term[0] == term[-1] and term[0] in "\"'":
        return term[1:-1].strip()
    return term


def _weighted(term: str) -> tuple[float, str]:
    m = _WEIGHT.match(term)
    if m:
        return float(m.group(1)), m.group(2).strip()
    return 1.0, term.strip()


def _media_kind(path: str) -> str | None:
    """The query kind of an existing file, by its content (its media kind); None if it has none."""
    from xmr import media

    kind = media.find(media.classify_path(path).modality)
    return kind.query_kind if kind is not None else None


def _file_part(raw: str, expect: str | None, sign: float = 1.0) -> QueryPart:
    weight, value = _weighted(raw)
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.exists(path) and os.path.exists(os.path.expanduser(raw)):
        weight, path = 1.0, os.path.abspath(os.path.expanduser(raw))  # a name that merely contains ':'
    if not os.path.exists(path):
        raise PathNotFound("query file not found", path=value)
    if not os.path.isfile(path):
        raise MediaError("query path is not a file", path=value)
    kind = _media_kind(path)
    if expect is not None:
        if expect == "text_file":
            kind = "text_file"  # read_text gives the precise error for non-text
        elif kind != expect:
            noun = {"image": "an image", "audio": "audio", "video": "a video"}[expect]
            found = {"text_file": "text", None: "neither image, audio nor text"}.get(kind, kind)
            raise MediaError(f"not {noun} (content is {found})", path=value)
    elif kind is None:
        raise MediaError("query file is neither an image, audio nor text", path=value)
    return QueryPart(kind=kind, value=path, weight=sign * weight)


def _meant_as_file(value: str) -> bool:
    """A term that is surely a path: ./x, ../x, ~/x, or /dir/x where /dir exists."""
    if " " in value:
        return False
    if value.startswith(("./", "../", "~/")):
        return True
    parent = os.path.dirname(value)
    return value.startswith("/") and parent not in ("", "/") and os.path.isdir(parent)


def parse_query(
    query: str | None = None,
    *,
    images: list[str] | None = None,
    audios: list[str] | None = None,
    text_files: list[str] | None = None,
    stdin: TextIO | None = None,
    videos: list[str] | None = None,
    files: bool = True,
) -> list[QueryPart]:
    """All parts of a query; raises UsageError if there are none.

    ``files=False`` takes every term as text and never looks at the file
    system (the server: a query string must not name files on its disk).
    """
    parts: list[QueryPart] = []
    if query is not None:
        if query.strip() == "-":
            if stdin is None:
                raise UsageError("query '-' needs standard input")
            query = stdin.read()
        for sign, term, quoted in _split_terms(query):
            weight, value = _weighted(term)
            if not value:
                continue
            looks_like_path = files and (value.startswith(("/", "./", "../", "~")) or os.sep in value)
            if looks_like_path and os.path.isfile(os.path.expanduser(value)):
                part = _file_part(term, None, sign)
            elif files and not quoted and _meant_as_file(value):
                raise PathNotFound(
                    "query file not found", path=value, hint="to search for that text, put it in double quotes"
                )
            else:
                part = QueryPart(kind="text", value=value, weight=sign * weight)
            parts.append(part)
    for raw in images or []:
        parts.append(_file_part(raw, "image"))
    for raw in audios or []:
        parts.append(_file_part(raw, "audio"))
    for raw in text_files or []:
        parts.append(_file_part(raw, "text_file"))
    for raw in videos or []:
        parts.append(_file_part(raw, "video"))
    if not parts:
        raise UsageError("empty query: give query text, '-' for standard input, --image, --audio or --text-file")
    if all(p.weight <= 0 for p in parts):
        raise UsageError("a query needs at least one part with a positive weight")
    return parts


def display(parts: list[QueryPart]) -> str:
    out = ""
    for i, p in enumerate(parts):
        sign = "-" if p.weight < 0 else "+"
        label = QueryPart(p.kind, p.value if p.kind == "text" else Path(p.value).name, abs(p.weight)).label()
        out += (f" {sign} " if i else ("-" if p.weight < 0 else "")) + label
    return out
