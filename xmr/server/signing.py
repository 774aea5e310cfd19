"""Signed, expiring URLs for ``/api/files``: what the page's images and players load.

A browser sends a cookie set by ``127.0.0.1:8765`` to *every* port of 127.0.0.1
(cookies are not isolated by port), so any other local server the user visits
would receive it and could replay it. The page therefore holds no cookie: it
keeps the token (from the launch URL's fragment) in its own origin's
``sessionStorage`` and sends it as a header, and the files it shows come from
URLs the server signed when it answered the search:

    /api/files/12?kind=thumb&exp=1767225600&sig=<HMAC-SHA256(secret, "12\\nthumb\\n1767225600")>

The secret is random per server start (``secrets.token_bytes``) and never leaves
the process, so a URL works only against the server that made it, for one file,
one kind and until ``exp``; the expiry is rounded up to the hour so a result
shown twice gets the same URL (and the browser's cache).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Iterable
from urllib.parse import parse_qs

DEFAULT_TTL_S = 12 * 3600  # a page left open over a working day still shows its images
_ROUND_S = 3600


class UrlSigner:
    def __init__(self, secret: bytes | None = None, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.secret = secret or secrets.token_bytes(32)
        self.ttl_s = ttl_s

    def _sig(self, file_id: int, kind: str, exp: int) -> str:
        mac = hmac.new(self.secret, f"{file_id}\n{kind}\n{exp}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def url(self, file_id: int, kind: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        exp = math.ceil((now + self.ttl_s) / _ROUND_S) * _ROUND_S
        return f"/api/files/{file_id}?kind={kind}&exp={exp}&sig={self._sig(file_id, kind, exp)}"

    def urls(self, file_id: int, kinds: Iterable[str], now: float | None = None) -> dict[str, str]:
        """The signed URLs of these views of a file (``original`` and its media kind's previews)."""
        return {kind: self.url(file_id, kind, now) for kind in kinds}

    def verify(self, path: str, query_string: str, now: float | None = None) -> bool:
        """True if ``path?query_string`` is a URL this signer made and it has not expired."""
        prefix = "/api/files/"
        if not path.startswith(prefix) or not path[len(prefix) :].isdigit():
            return False
        q = parse_qs(query_string, keep_blank_values=True)
        if any(len(v) != 1 for v in q.values()):
            return False  # one value each: no second kind= to confuse the handler
        kind, exp, sig = (q.get(name, [""])[0] for name in ("kind", "exp", "sig"))
        if not (kind and exp.isdigit() and sig):
            return False
        now = time.time() if now is None else now
        if int(exp) < now:
            return False
        return hmac.compare_digest(sig, self._sig(int(path[len(prefix) :]), kind, int(exp)))
