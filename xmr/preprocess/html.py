"""The visible text of an HTML page (standard library only).

Script, style, templates, SVG and the navigation chrome (``nav``, ``header``,
``footer``, ``aside``, forms, ``role="navigation"``, ``hidden``) are dropped;
the ``<title>`` is kept and comes first. Block elements separate words.
"""

from __future__ import annotations

import codecs
import os
import re
from html.parser import HTMLParser

from xmr.errors import MediaError
from xmr.preprocess import read_capped
from xmr.preprocess.text import decode_text

_SKIP = frozenset(
    "script style noscript template svg math canvas iframe object nav header footer aside form button select"
    " textarea dialog".split()
)
_INLINE = frozenset(
    "a abbr b bdi bdo cite code data dfn em i kbd mark q s samp small span strong sub sup time u var wbr".split()
)
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.IGNORECASE)


class _Visible(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.body: list[str] = []
        self.skipping: list[str] = []  # open elements whose content is dropped
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            if tag not in _INLINE:
                self.body.append(" ")
            return
        a = dict(attrs)
        hidden = "hidden" in a or a.get("aria-hidden") == "true" or a.get("role") in ("navigation", "banner")
        if self.skipping or tag in _SKIP or hidden:
            self.skipping.append(tag)
            return
        if tag == "title":
            self.in_title = True
        elif tag not in _INLINE:
            self.body.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _INLINE and not self.skipping:
            self.body.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            # pop back to the matching open element (HTML leaves many elements unclosed)
            if tag in self.skipping:
                while self.skipping and self.skipping.pop() != tag:
                    pass
            return
        if tag == "title":
            self.in_title = False
        elif tag not in _INLINE:
            self.body.append(" ")

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        (self.title if self.in_title else self.body).append(data)


def html_text(markup: str) -> str:
    """Title, then the visible body text (not normalised)."""
    parser = _Visible()
    parser.feed(markup)
    parser.close()
    title = "".join(parser.title).strip()
    body = "".join(parser.body)
    return f"{title}\n{body}" if title else body


def decode_html(data: bytes, *, truncated: bool = False) -> str:
    """Bytes -> str: a BOM or a ``<meta charset>`` wins, else as for text files."""
    if not data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        m = _CHARSET.search(data[:4096])
        if m:
            try:
                name = codecs.lookup(m.group(1).decode("ascii")).name
            except LookupError:
                name = None
            if name and name not in ("utf-8", "cp1252", "iso8859-1"):
                return data.decode(name, errors="replace")
    return decode_text(data, truncated=truncated)


def read_html(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> str:
    data, truncated = read_capped(path, max_bytes)
    try:
        return html_text(decode_html(data, truncated=truncated))
    except MediaError as exc:
        raise MediaError(exc.reason, path=path) from None
