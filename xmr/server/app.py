"""The Starlette application behind ``xmr serve``: JSON API, files and the web page.

Security, in the order a request meets it (``_Guard``, plain ASGI):

1. the ``Host`` header must name this server (a DNS-rebinding page cannot reach it);
2. a request with an ``Origin`` other than this server's, or that the browser
   marks ``Sec-Fetch-Site: cross-site``/``same-site``, is refused (403);
3. every ``/api/`` call needs the per-index token as ``Authorization: Bearer``
   (the CLI reads it from the index dir; the page from the launch URL's
   fragment, never sent to the server in a URL), except a ``GET /api/files``
   URL this server signed (``xmr.server.signing``): no cookie is accepted, since
   a browser sends cookies to every port of the host;
4. a body over the upload cap is refused with 413, by Content-Length or
   while it streams in.

Files are served by catalogue id only (see ``xmr.server.files``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from html import escape as html_escape
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from xmr import core, media
from xmr.errors import ExitCode, NoIndex, UsageError, XmrError
from xmr.filters import filters_from
from xmr.query import QueryPart, keyword_text, parse_query
from xmr.search import SearchOptions
from xmr.server import files as fs
from xmr.server.openapi import openapi_document
from xmr.server.signing import UrlSigner
from xmr.server.state import WarmIndex
from xmr.server.uploads import DEFAULT_MAX_UPLOAD_BYTES, Sandbox, Upload, display_name, staged

_HTTP_STATUS = {
    ExitCode.USAGE: 400,
    ExitCode.NOT_FOUND: 404,
    ExitCode.NO_INDEX: 404,
    ExitCode.BAD_INPUT: 422,
    ExitCode.MODEL_MISSING: 503,
    ExitCode.CATALOGUE: 503,
}
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; media-src 'self';"
    " connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
_FILE_CSP = "default-src 'none'; sandbox"
_MAX_K = 1000
_PARAMS = frozenset({"q", "parts", "like", "type", "under", "k", "min_score", "explain", "all_segments", "exact"})
# metadata filters, sort and keyword fusion (docs/metadata.md)
_PARAMS |= {"after", "before", "camera", "near", "sort", "match", "keywords"}


@dataclass
class ServerConfig:
    index_dir: Path
    token: str
    host: str = "127.0.0.1"
    port: int = 8765
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    extra_hosts: list[str] = field(default_factory=list)
    # --allow-remote on a wildcard address: clients name the machine as they reach it (any Host);
    # the token still gates the API and an Origin must still be the page's own
    any_host: bool = False
    signer: UrlSigner = field(default_factory=UrlSigner)  # the page's file URLs

    @property
    def cookie_name(self) -> str:
        # what earlier versions set for the page: no longer accepted, and cleared when the page loads
        return f"xmr_token_{self.port}"


def _error(exc: XmrError) -> JSONResponse:
    status = _HTTP_STATUS.get(exc.exit_code, 500)
    return JSONResponse({"error": str(exc), "exit_code": int(exc.exit_code)}, status_code=status)


def _plain(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _TooLarge(Exception):
    pass


class _Guard:
    """Host, Origin, token and size checks around the whole app (see the module docstring)."""

    def __init__(self, app: Any, config: ServerConfig):
        self.app = app
        self.config = config
        hosts = {"127.0.0.1", "localhost", "[::1]", config.host, *config.extra_hosts}
        if ":" in config.host and not config.host.startswith("["):
            hosts.add(f"[{config.host}]")
        self.hosts = {f"{h}:{config.port}" for h in hosts}
        self.origins = {f"http://{h}" for h in self.hosts}
        self.token = config.token.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _SECURITY_HEADERS
            await send(message)

        limit = self.config.max_upload_bytes
        seen = 0

        async def counted_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        await self.app(scope, counted_receive, send_with_headers)  # _TooLarge -> 413 (exception handler)

    def _refusal(self, scope: dict, headers: dict[str, str]) -> Response | None:
        host = headers.get("host", "").lower()
        if self.config.any_host:
            if not host:
                return _plain(421, "unexpected Host header")
            origins = {f"http://{host}"}
        elif host not in self.hosts:
            return _plain(421, "unexpected Host header")
        else:
            origins = self.origins
        origin = headers.get("origin")
        if origin is not None and origin.lower() not in origins:
            return _plain(403, "cross-origin request refused")
        if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return _plain(403, "cross-origin request refused")
        path = scope["path"]
        if not path.startswith("/api/"):
            return None
        signed = scope.get("method") in ("GET", "HEAD") and self.config.signer.verify(
            path, scope.get("query_string", b"").decode("latin-1")
        )
        if not signed and not self._authorised(headers):
            return _plain(401, "missing or wrong token")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.config.max_upload_bytes:
            return _plain(413, f"upload larger than {self.config.max_upload_bytes} bytes")
        return None

    def _authorised(self, headers: dict[str, str]) -> bool:
        given = ""
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return bool(given) and secrets.compare_digest(given.encode(), self.token)


class Api:
    """Request handlers; ``warm`` holds the index, ``sandbox`` decodes uploads."""

    def __init__(self, config: ServerConfig, warm: WarmIndex, sandbox: Sandbox):
        self.config = config
        self.warm = warm
        self.sandbox = sandbox
        self.lookup = fs.FileLookup(config.index_dir)

    # -- page --------------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        html = resources.files("xmr").joinpath("web/index.html").read_text()
        # the page lists the built-in result types; added media kinds (xmr.media) get a box each
        boxes = "".join(
            f'      <label><input type="checkbox" name="type" value="{n}" checked> {n}</label>\n'
            for n in (html_escape(k.name) for k in media.snapshot())
        )
        html = html.replace("    </fieldset>\n", boxes + "    </fieldset>\n", 1)
        resp = Response(html, media_type="text/html", headers={"content-security-policy": _PAGE_CSP})
        if self.config.cookie_name in request.cookies:  # an earlier version's token cookie: drop it
            resp.delete_cookie(self.config.cookie_name, path="/", httponly=True, samesite="strict")
        return resp

    async def favicon(self, request: Request) -> Response:
        svg = resources.files("xmr").joinpath("web/favicon.svg").read_bytes()
        return Response(svg, media_type="image/svg+xml", headers={"cache-control": "max-age=86400"})

    async def ping(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def status(self, request: Request) -> Response:
        data = await asyncio.to_thread(core.status, self.config.index_dir)
        data["server"] = await asyncio.to_thread(self.warm.stats)
        return JSONResponse(data)

    async def dupes(self, request: Request) -> Response:
        """Near-duplicate groups (xmr dupes): ?type=image|audio (repeatable), ?threshold=cosine."""
        from xmr.dupes import find_dupes

        try:
            types = request.query_params.getlist("type") or ["image", "audio"]
            raw = request.query_params.get("threshold")
            try:
                threshold = float(raw) if raw is not None else None
            except ValueError:
                raise UsageError("threshold must be a number") from None
            groups = await asyncio.to_thread(
                find_dupes, index_dir=self.config.index_dir, types=types, threshold=threshold
            )
        except XmrError as exc:
            return _error(exc)
        ids = await asyncio.to_thread(self.lookup.ids_for_paths, [f["path"] for g in groups for f in g.files])
        doc = {"groups": [g.as_dict() for g in groups]}
        for g in doc["groups"]:
            for f in g["files"]:
                if f["path"] in ids:
                    f["file_id"] = ids[f["path"]]
                    kind = media.find(g["modality"])
                    previews = list(kind.previews) if kind is not None else []
                    f["urls"] = self.config.signer.urls(f["file_id"], ("original", *previews))
        return JSONResponse(doc)

    # -- search -----------------------------------------------------------------------------
    async def search(self, request: Request) -> Response:
        try:
            params, uploads = await self._read_search(request)
            doc, raw = await asyncio.to_thread(self._run_search, params, uploads)
        except XmrError as exc:
            return _error(exc)
        headers = {}
        if raw:
            headers["x-xmr-path-bytes"] = json.dumps(raw)
        return JSONResponse(doc, headers=headers)

    async def _read_search(self, request: Request) -> tuple[dict[str, Any], list[Upload]]:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_files=16, max_fields=32)
            try:
                query = form.get("query") or "{}"
                if not isinstance(query, str):
                    raise UsageError("the 'query' field must be text (a JSON object), not a file")
                params = _json_object(query)
                weights = _list(params.pop("file_weights", None))
                if any(isinstance(w, bool) or not isinstance(w, (int, float)) for w in weights):
                    raise UsageError("file_weights must be numbers")
                uploads = []
                for name, value in form.multi_items():
                    if not isinstance(value, str):
                        data = await value.read()
                        w = float(weights[len(uploads)]) if len(uploads) < len(weights) else 1.0
                        uploads.append(Upload(name, value.filename or "upload", data, w))
                return params, uploads
            finally:
                await form.close()
        body = await request.body()
        return _json_object(body.decode("utf-8", "replace") or "{}"), []

    def _run_search(self, params: dict[str, Any], uploads: list[Upload]) -> tuple[dict[str, Any], dict[str, str]]:
        unknown = sorted(set(params) - _PARAMS)
        if unknown:  # e.g. concepts_file: nothing the API takes names a file on the server
            raise UsageError(f"unknown search parameter {unknown[0]!r}; known: {', '.join(sorted(_PARAMS))}")
        options, explain, all_segments = _options(params)
        parts = _text_parts(params)
        likes = [self.lookup.get(_int(v, "like")) for v in _list(params.get("like"))]
        with staged(uploads, self.sandbox) as staged_files:
            names: dict[str, str] = {}
            for kind, path, up in staged_files:
                parts.append(QueryPart(kind=kind, value=path, weight=up.weight, cacheable=False))
                names[path] = display_name(up.filename)
            for f in likes:
                os.close(fs.open_verified(f))  # only an indexed, unchanged file is read
                kind = media.get(f.modality).query_kind
                if kind is None:
                    raise UsageError(f"a file of type {f.modality} cannot be a query (like {f.id})")
                parts.append(QueryPart(kind=kind, value=f.path, weight=1.0))
            if not parts:
                raise UsageError("empty query: give q, parts, like or an uploaded file")
            if all(p.weight <= 0 for p in parts):
                raise UsageError("a query needs at least one part with a positive weight")
            response = self.warm.search(parts, options)
        doc = _rename(response.as_dict(explain=explain, all_segments=all_segments), names)
        ids = self.lookup.ids_for_paths([r["path"] for r in doc["results"]])
        for r in doc["results"]:
            if r["path"] in ids:
                r["file_id"] = ids[r["path"]]
                kind = media.find(r["modality"])
                r["previews"] = list(kind.previews) if kind is not None else []
                r["urls"] = self.config.signer.urls(r["file_id"], ("original", *r["previews"]))
                if kind is not None and kind.extra.get("timed") and "thumb" in r["urls"] and "start_s" in r:
                    r["urls"]["thumb"] += f"&at={r['start_s']}"  # a video: the matching frame
        raw = {
            str(i): base64.b64encode(r.raw_path).decode() for i, r in enumerate(response.results) if r.raw_path
        }
        return doc, raw

    # -- files ------------------------------------------------------------------------------
    async def file(self, request: Request) -> Response:
        kind = request.query_params.get("kind", "original")
        if kind not in fs.KINDS:
            return _plain(400, f"unknown kind {kind!r}; use {', '.join(fs.KINDS)}")
        try:
            file_id = int(request.path_params["file_id"])
            at_s = _at(request.query_params.get("at"))  # a video's thumbnail: the frame at that time
            return await asyncio.to_thread(self._file, file_id, kind, request.headers.get("range"), at_s)
        except NoIndex as exc:
            return _plain(404, str(exc))
        except fs.FileChanged as exc:
            return _plain(409, str(exc))
        except XmrError as exc:
            return _error(exc)

    def _file(self, file_id: int, kind: str, range_header: str | None, at_s: float = 0.0) -> Response:
        f = self.lookup.get(file_id)
        fd = fs.open_verified(f)
        mime = fs.media_type(f)
        if kind != "original":
            try:
                if kind == "thumb":
                    derived = fs.thumbnail(self.config.index_dir, f, fd, at_s)
                else:
                    derived = fs.playable_audio(self.config.index_dir, f, fd)
            finally:
                os.close(fd)
            fd = os.open(derived, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            mime = "image/jpeg" if kind == "thumb" else "audio/wav"
        try:
            return self._respond(fd, mime, range_header)
        except BaseException:
            os.close(fd)
            raise

    def _respond(self, fd: int, media: str, range_header: str | None) -> Response:
        """The response for an open fd (its owner from here: closed on every path but streaming)."""
        size = os.fstat(fd).st_size
        headers = {
            "accept-ranges": "bytes",
            "content-security-policy": _FILE_CSP,
            "cache-control": "private, max-age=300",
            "content-disposition": "inline",
        }
        try:
            r = fs.parse_range(range_header, size)
        except fs.RangeNotSatisfiable:
            os.close(fd)
            return Response(status_code=416, headers={**headers, "content-range": f"bytes */{size}"})
        headers["content-length"] = str(r.length if size else 0)
        if r.partial:
            headers["content-range"] = f"bytes {r.start}-{r.end}/{size}"
        if size == 0:
            os.close(fd)
            return Response(b"", media_type=media, headers=headers)
        status = 206 if r.partial else 200
        return StreamingResponse(fs.iter_fd(fd, r), status_code=status, media_type=media, headers=headers)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"request body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError("request body must be a JSON object")
    return value


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


_INT = re.compile(r"^-?[0-9]{1,18}$")


def _at(value: str | None) -> float:
    """The ``at`` of a thumbnail URL: seconds into a video (0 when absent)."""
    try:
        at = float(value) if value is not None else 0.0
    except ValueError:
        raise UsageError("at must be a number of seconds") from None
    if not math.isfinite(at) or at < 0:
        raise UsageError("at must be a number of seconds")
    return at


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not _INT.match(str(value)):
        raise UsageError(f"{name} must be an integer")
    return int(value)


def _options(params: dict[str, Any]) -> tuple[SearchOptions, bool, bool]:
    k = _int(params.get("k", 10), "k")
    if not 1 <= k <= _MAX_K:
        raise UsageError(f"k must be between 1 and {_MAX_K}")
    types = [str(t) for t in _list(params.get("type"))]
    bad = [t for t in types if t not in media.names()]
    if bad:
        raise UsageError(f"unknown type {bad[0]!r}; choose from {', '.join(media.names())}")
    min_score = params.get("min_score")
    if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))):
        raise UsageError("min_score must be a number")
    options = SearchOptions(
        k=k,
        types=types,
        under=[str(u) for u in _list(params.get("under"))],  # a filter on catalogue paths; nothing is read
        min_score=None if min_score is None else float(min_score),
        all_segments=bool(params.get("all_segments", False)),
        exact=bool(params.get("exact", False)),
        filters=filters_from(params.get("after"), params.get("before"), params.get("camera"), params.get("near")),
        sort=str(params.get("sort", "score")),
        match=str(params.get("match", "both")),
        keyword_text=_keywords(params),
    )
    return options, bool(params.get("explain", False)), options.all_segments


def _keywords(params: dict[str, Any]) -> str | None:
    """The keyword side's query: ``keywords``, else ``q``'s positive terms (None: the text parts)."""
    words, q = params.get("keywords"), params.get("q")
    if words is not None and not isinstance(words, str):
        raise UsageError("keywords must be a string")
    if words is None and isinstance(q, str) and q.strip():
        words = keyword_text(q)
    return words


def _text_parts(params: dict[str, Any]) -> list[QueryPart]:
    """``q`` in the CLI's query language (terms are always text here) and explicit text ``parts``."""
    parts: list[QueryPart] = []
    q = params.get("q")
    if q is not None and not isinstance(q, str):
        raise UsageError("q must be a string")
    if q and q.strip():
        parts.extend(parse_query(q, files=False))
    for p in _list(params.get("parts")):
        if not isinstance(p, dict) or not isinstance(p.get("value"), str) or p.get("kind", "text") != "text":
            raise UsageError("parts must be objects {kind: 'text', value: str, weight: number}")
        weight = p.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise UsageError("a part's weight must be a number")
        if p["value"].strip():
            parts.append(QueryPart(kind="text", value=p["value"], weight=float(weight)))
    return parts


def _rename(value: Any, names: dict[str, str]) -> Any:
    """Replace the temporary paths of uploads by the names the client gave them, everywhere in the doc."""
    if not names:
        return value
    if isinstance(value, str):
        for tmp, name in names.items():
            value = value.replace(tmp, name)
        return value
    if isinstance(value, list):
        return [_rename(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _rename(v, names) for k, v in value.items()}
    return value


def create_app(config: ServerConfig, warm: WarmIndex, sandbox: Sandbox | None = None) -> Any:
    """The ASGI app: routes wrapped in the security guard."""
    api = Api(config, warm, sandbox or Sandbox())
    static = StaticFiles(packages=[("xmr", "web")])
    routes = [
        Route("/", api.page),
        Mount("/static", app=static, name="static"),
        Route("/api/ping", api.ping),
        Route("/favicon.ico", api.favicon),
        Route("/api/openapi.json", api.openapi),
        Route("/api/status", api.status),
        Route("/api/dupes", api.dupes),
        Route("/api/search", api.search, methods=["POST"]),
        Route("/api/files/{file_id:int}", api.file),
    ]
    limit = config.max_upload_bytes

    async def too_large(request: Request, exc: Exception) -> Response:
        return _plain(413, f"upload larger than {limit} bytes")

    app = Starlette(routes=routes, exception_handlers={_TooLarge: too_large})
    app.state.api = api
    return _Guard(app, config)
