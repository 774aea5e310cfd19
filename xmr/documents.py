"""The document policy: which text files are documents people read, and their text.

The text modality means documents: plain text and notes, HTML (visible text
only) and PDF (the text layer, page by page). Source code, data, markup and
logs are text too, but embedding them passage by passage costs hours and
drowns results in noise, so they are skipped as "not a document" (counted,
not errors). ``--text-ext EXT`` / ``XMR_TEXT_EXT`` adds extensions.

:func:`decide` looks only at the name and the first bytes (cheap, in the
indexer's workers); :func:`extract` reads a document's text the same way at
index time and when a snippet is shown, so the stored offsets stay valid.
:func:`is_junk` drops passages that are mostly non-words (hex, base64,
minified code) before they are encoded.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from xmr.preprocess.text import Passage

# the indexer reads at most this many bytes of a text document (also when a snippet is shown)
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024

PLAIN, HTML, PDF = "plain", "html", "pdf"
_HEAD_BYTES = 8192  # what decides a document's kind: as much as xmr.sniff looks at

PLAIN_EXTENSIONS = frozenset(
    ".txt .text .md .markdown .mdown .mkd .rst .org .adoc .asciidoc .tex .ltx .textile".split()
)
HTML_EXTENSIONS = frozenset(".html .htm .xhtml .shtml".split())
PDF_EXTENSIONS = frozenset({".pdf"})
DOCUMENT_EXTENSIONS = PLAIN_EXTENSIONS | HTML_EXTENSIONS | PDF_EXTENSIONS

SOURCE_CODE, DATA, MARKUP, LOG, MACHINE_TEXT = (
    "not a document (source code)",
    "not a document (data)",
    "not a document (markup)",
    "not a document (log)",
    "not a document (machine text)",
)
NO_READABLE_TEXT = "not a document (no readable text)"
NO_TEXT_LAYER = "no text layer"

_NOT_DOCUMENT: dict[str, str] = {
    **dict.fromkeys(
        (
            ".py .pyi .pyx .pxd .ipynb .js .mjs .cjs .jsx .ts .tsx .mts .cts .vue .svelte .c .h .cc .cpp .cxx"
            " .hpp .hh .hxx .inl .m .mm .java .kt .kts .scala .groovy .gradle .go .rs .rb .php .pl .pm .t .swift"
            " .cs .fs .fsx .vb .lua .r .jl .dart .sh .bash .zsh .fish .ksh .csh .ps1 .psm1 .bat .cmd .sql .asm"
            " .s .el .lisp .scm .clj .cljs .ex .exs .erl .hrl .hs .ml .mli .nim .zig .v .sv .vhd .vhdl .f .f90"
            " .for .pas .d .cmake .mk .make .mak .vim .awk .sed .tcl .css .scss .sass .less .styl .coffee"
            " .elm .purs .sol .proto .thrift .graphql .gql .wasm .wat .ebnf .y .l .pro .qml .ino"
        ).split(),
        SOURCE_CODE,
    ),
    **dict.fromkeys(
        (
            ".json .jsonl .ndjson .json5 .geojson .topojson .csv .tsv .psv .yaml .yml .toml .ini .cfg .conf"
            " .config .env .properties .lock .sum .plist .pbtxt .prototxt .tfvars .hcl .ics .vcf .vcard .po .pot"
            " .map .pem .crt .cer .key .pub .asc .gpg .sig .patch .diff .dat .tab .arff .mtx .obj .mtl .ply"
            " .stl .gcode .nc .hex .ihex .srec .uu .uue .b64 .bdf .afm .pfa .cube .cue .m3u .m3u8 .pls .srt"
            " .vtt .sub .ass .ssa .lrc .bib .ris .sfv .md5 .sha1 .sha256 .torrent .reg .desktop .service"
            " .editorconfig .gitignore .gitattributes .dockerignore .npmignore .eslintrc .prettierrc .babelrc"
        ).split(),
        DATA,
    ),
    **dict.fromkeys(
        (
            ".xml .svg .xsl .xslt .xsd .dtd .rss .atom .opml .kml .gpx .wsdl .xaml .xib .storyboard .csproj"
            " .vcxproj .props .targets .resx .xliff .xlf .nuspec .pom .iml .ui .glade .mathml .rdf .owl .ttl"
            " .nt .nq .jsonld .wxs .plist.xml .sgml .jsp .asp .aspx .erb .ejs .hbs .mustache .jinja .j2"
            " .twig .liquid .tpl"
        ).split(),
        MARKUP,
    ),
    **dict.fromkeys(".log .out .err .trace .journal".split(), LOG),
}
# Well-known file names without a (meaningful) extension
_NOT_DOCUMENT_NAMES: dict[str, str] = {
    **dict.fromkeys(
        "makefile gnumakefile dockerfile containerfile vagrantfile rakefile gemfile podfile brewfile"
        " jenkinsfile procfile justfile snakefile sconstruct cmakelists.txt build bazel workspace".split(),
        SOURCE_CODE,
    ),
    **dict.fromkeys("package-lock.json yarn.lock pipfile pipfile.lock poetry.lock cargo.lock go.sum".split(), DATA),
}


def normalise_extension(ext: str) -> str:
    """'md', '.MD', '*.md' -> '.md' (what ``--text-ext`` accepts)."""
    ext = ext.strip().lower().lstrip("*")
    if not ext or ext == ".":
        raise ValueError("an extension must not be empty")
    return ext if ext.startswith(".") else "." + ext


@dataclass(frozen=True)
class Policy:
    """Which text files are documents. ``extra``: extensions added as plain text."""

    extra: frozenset[str] = frozenset()

    def junk_guard(self, name: str | os.PathLike[str]) -> bool:
        """Whether the junk guard applies: not to extensions the user added (they asked for them as is)."""
        return os.path.splitext(os.fspath(name))[1].lower() not in self.extra

    @classmethod
    def with_extensions(cls, exts: Iterable[str]) -> Policy:
        return cls(frozenset(normalise_extension(e) for e in exts))


@dataclass(frozen=True)
class Decision:
    kind: str | None  # plain | html | pdf; None: not a document
    skip: str | None = None  # why it is not indexed (a skip, not an error)


def decide(name: str, head_text: str, *, pdf: bool = False, policy: Policy | None = None) -> Decision:
    """Whether a file that sniffed as text (``head_text``: its decoded first bytes) or
    as a PDF (``pdf``) is a document, and which kind."""
    policy = policy or Policy()
    base = os.path.basename(name).lower()
    ext = os.path.splitext(base)[1]
    if ext in policy.extra:
        return Decision(document_kind(name, head_text, pdf=pdf))
    if pdf:
        return Decision(PDF)
    if ext in HTML_EXTENSIONS:
        return Decision(HTML)
    if base in _NOT_DOCUMENT_NAMES:  # before the extension: CMakeLists.txt is code
        return Decision(None, _NOT_DOCUMENT_NAMES[base])
    if ext in PLAIN_EXTENSIONS:
        return Decision(document_kind(name, head_text))
    if ext in _NOT_DOCUMENT:
        return Decision(None, _NOT_DOCUMENT[ext])
    # no extension, an unknown one, or a media extension holding text: decide by content
    if _looks_html(head_text) or looks_like_prose(head_text):
        return Decision(document_kind(name, head_text))
    return Decision(None, MACHINE_TEXT)


def document_kind(name: str, head_text: str, *, pdf: bool = False) -> str:
    """How an accepted document is read: the same answer at index time and when a snippet is shown."""
    if pdf:
        return PDF
    if os.path.splitext(name)[1].lower() in HTML_EXTENSIONS or _looks_html(head_text):
        return HTML
    return PLAIN


def head_text(head: bytes) -> str:
    """The decoded first bytes of a file that sniffed as text ('' if they do not decode)."""
    from xmr.errors import MediaError
    from xmr.preprocess.text import decode_text

    try:
        return decode_text(head, truncated=True)
    except MediaError:
        return ""


def read_any(path: str | os.PathLike[str], *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Document:
    """Read a file given as a document (a query's ``--text-file``): whatever its name, no policy."""
    return extract(path, any_kind(path), max_bytes=max_bytes)


def any_kind(path: str | os.PathLike[str]) -> str:
    """The kind ``read_any`` reads a file as (PDF, HTML, plain...), from its name and first bytes."""
    from xmr.preprocess import read_error

    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError as exc:
        raise read_error(exc, path) from None
    pdf = head.startswith(b"%PDF-")
    return document_kind(os.fspath(path), "" if pdf else head_text(head), pdf=pdf)


def read_document(
    path: str | os.PathLike[str],
    head: bytes,
    *,
    policy: Policy | None = None,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> tuple[Document | None, str | None]:
    """(the document, None), or (None, why it is skipped). Raises MediaError for unreadable files."""
    policy = policy or Policy()
    pdf = head.startswith(b"%PDF-")
    decision = decide(os.fspath(path), "" if pdf else head_text(head), pdf=pdf, policy=policy)
    if decision.kind is None:
        return None, decision.skip
    doc = extract(path, decision.kind, max_bytes=max_bytes)
    if decision.kind == PDF and not doc.text:
        return None, NO_TEXT_LAYER
    if policy.junk_guard(path) and all_junk(doc.text):
        return None, NO_READABLE_TEXT
    return doc, None


_HTML_START = re.compile(r"\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html[\s>])", re.IGNORECASE | re.DOTALL)


def _looks_html(text: str) -> bool:
    return _HTML_START.match(text[:2048]) is not None


# -- junk guard ----------------------------------------------------------------------------------

_PUNCT = string.punctuation + "“”‘’«»„‚…–—·•¡¿"
_NUMBER = re.compile(r"^[+-]?\d[\d.,:/%]*$")
_HEX = re.compile(r"^(?:0x)?[0-9a-f]+$", re.IGNORECASE)
_MAX_WORD = 30  # letters; longer runs are base64, hashes or glued-up code
_CODE_CHARS = frozenset("{}[]();=<>|\\^~`$@#*")
JUNK_WORD_SHARE = 0.5  # a passage whose word characters are fewer than this share is junk


def _is_word(core: str) -> bool:
    if _HEX.match(core) and (len(core) >= 8 or any(c.isdigit() for c in core)):
        return False
    letters = core.replace("-", "").replace("'", "").replace("’", "")
    if not letters.isascii():
        # CJK and other scripts may run for long without spaces, punctuation inside
        return sum(c.isalpha() for c in letters) >= 0.7 * len(letters)
    if not letters.isalpha():
        return False
    if len(letters) > _MAX_WORD:
        return False
    # camelCase / random mixed case (base64 pieces, identifiers): two or more case changes
    changes = sum(1 for a, b in zip(letters, letters[1:], strict=False) if a.islower() and b.isupper())
    return changes < 2


def word_share(text: str) -> float:
    """The share of characters (numbers aside) that are in word-like tokens, 0..1."""
    words = total = 0
    for token in text.split():
        core = token.strip(_PUNCT)
        if core and _NUMBER.match(core):
            continue  # numbers are neither words nor junk
        total += len(token)
        if core and _is_word(core):
            words += len(token)
    return words / total if total else 0.0


def is_junk(text: str) -> bool:
    """True for a passage that is mostly non-words: hex runs, base64, minified code, tables of numbers."""
    return word_share(text) < JUNK_WORD_SHARE


def looks_like_prose(text: str) -> bool:
    """Clearly prose (for files whose name says nothing): mostly words, little code punctuation."""
    text = text.strip()
    if not text or text.startswith("#!"):
        return False
    if len(text.split()) < 3:
        return False
    code = sum(1 for c in text if c in _CODE_CHARS)
    return code <= 0.03 * len(text) and word_share(text) >= 0.8


def all_junk(text: str, window_words: int = 64) -> bool:
    """Every window of ``window_words`` tokens is junk (the file has no readable passage)."""
    tokens = text.split()
    if not tokens:
        return False
    return all(is_junk(" ".join(tokens[i : i + window_words])) for i in range(0, len(tokens), window_words))


# -- reading documents ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """A document's normalised text; ``pages``: (page number, start, end) offsets into it (PDF)."""

    text: str
    pages: tuple[tuple[int, int, int], ...] | None = None


def extract(path: str | os.PathLike[str], kind: str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Document:
    """The normalised text of a document of ``kind``. Raises MediaError for unreadable files."""
    from xmr.preprocess.text import normalise, read_text

    if kind == PDF:
        from xmr.preprocess.pdf import read_pdf_pages

        return join_pages(read_pdf_pages(path, max_chars=max_bytes))
    if kind == HTML:
        from xmr.preprocess.html import read_html

        return Document(normalise(read_html(path, max_bytes=max_bytes)))
    return Document(normalise(read_text(path, max_bytes=max_bytes)))


def join_pages(pages: Sequence[tuple[int, str]]) -> Document:
    """Normalise each page's text and join them with one space, keeping each page's span."""
    from xmr.preprocess.text import normalise

    parts: list[str] = []
    spans: list[tuple[int, int, int]] = []
    pos = 0
    for number, raw in pages:
        text = normalise(raw)
        if not text:
            continue
        if parts:
            pos += 1  # the joining space
        spans.append((number, pos, pos + len(text)))
        parts.append(text)
        pos += len(text)
    return Document(" ".join(parts), tuple(spans))


def split_document(doc: Document, split: Callable[[str], list[Passage]]) -> list[tuple[Passage, int | None]]:
    """Passages of a document with their page numbers; no passage spans two pages."""
    if doc.pages is None:
        return [(p, None) for p in split(doc.text)]
    out: list[tuple[Passage, int | None]] = []
    for number, start, end in doc.pages:
        for p in split(doc.text[start:end]):
            out.append((Passage(p.text, p.start + start, p.end + start), number))
    return out
