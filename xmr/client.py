"""``xmr search`` through a running ``xmr serve`` on the same index.

The server records its address and token in ``INDEX/server.json`` (mode
0600). The client probes ``/api/ping`` with a 200 ms budget; if there is no
server, or it does not answer in time, the caller falls back to searching in
process. Query files are uploaded (the server reads no path it is given),
with the client's absolute path as their name, so the output is the same as
in process. Standard library only: no numpy, no torch in this path.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from xmr.errors import ExitCode, XmrError
from xmr.query import QueryPart
from xmr.server.address import read_address

PROBE_TIMEOUT_S = 0.2
SEARCH_TIMEOUT_S = float(os.environ.get("XMR_SERVER_TIMEOUT", "600") or 600)


class RemoteError(XmrError):
    """An error the server reported; keeps the exit code the in-process search would have used."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = ExitCode(exit_code) if exit_code in ExitCode._value2member_map_ else ExitCode.ERROR


@dataclass
class RemoteHit:
    space: str
    raw: float
    score: float
    model_id: str | None = None
    route: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    snippet: str | None = None


@dataclass
class RemoteResult:
    """What the CLI's renderers read from a result (same names as ``xmr.search.Result``)."""

    doc: dict[str, Any]
    path: str
    modality: str
    score: float
    best: RemoteHit
    segments: list[RemoteHit] = field(default_factory=list)
    contributions: list[dict[str, Any]] = field(default_factory=list)
    raw_path: bytes | None = None
    keyword: dict[str, Any] | None = None  # with --explain: the keyword part (xmr.search.Result)
    semantic_score: float | None = None

    @property
    def path_bytes(self) -> bytes:
        return self.raw_path if self.raw_path is not None else os.fsencode(self.path)

    def as_dict(self, *, explain: bool = False, all_segments: bool = False) -> dict[str, Any]:
        return self.doc


@dataclass
class RemoteResponse:
    doc: dict[str, Any]
    results: list[RemoteResult]

    def as_dict(self, *, explain: bool = False, all_segments: bool = False) -> dict[str, Any]:
        return self.doc


def _hit(d: dict[str, Any], explain: dict[str, Any] | None = None) -> RemoteHit:
    return RemoteHit(
        space=d["space"],
        raw=float(d["raw"]),
        score=float(d["score"]),
        model_id=(explain or {}).get("model_id", d.get("model_id")),
        route=(explain or {}).get("route", d.get("route")),
        start_s=d.get("start_s"),
        end_s=d.get("end_s"),
        snippet=d.get("snippet"),
    )


def response_from_doc(doc: dict[str, Any], raw_paths: dict[str, str] | None = None) -> RemoteResponse:
    """Rebuild what the renderers need from an ``xmr-search/1`` document (the server's ``file_id``,
    ``urls`` and ``previews`` dropped)."""
    results = []
    for i, r in enumerate(doc["results"]):
        r.pop("file_id", None)
        r.pop("urls", None)
        r.pop("previews", None)
        raw = (raw_paths or {}).get(str(i))
        explain = r.get("explain")
        results.append(
            RemoteResult(
                doc=r,
                path=r["path"],
                modality=r["modality"],
                score=float(r["score"]),
                best=_hit(r, explain),
                segments=[_hit(s) for s in r.get("segments", [])],
                contributions=list((explain or {}).get("contributions", [])),
                raw_path=base64.b64decode(raw) if raw else None,
                keyword=(explain or {}).get("keyword"),
                semantic_score=(explain or {}).get("semantic_score"),
            )
        )
    return RemoteResponse(doc, results)


def _multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.append(value.encode() + b"\r\n")
    for name, filename, data in files:
        quoted = json.dumps(filename)  # a quoted string; the server only shows it
        out.append(
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename={quoted}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        out.append(data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def _connect(index_dir: Path) -> tuple[http.client.HTTPConnection, str] | None:
    addr = read_address(index_dir)
    if addr is None or not addr.alive():
        return None
    u = urlsplit(addr.url)
    if u.scheme != "http" or not u.hostname or not u.port:
        return None
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=PROBE_TIMEOUT_S)
    try:
        conn.request("GET", "/api/ping", headers={"Authorization": f"Bearer {addr.token}"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            conn.close()
            return None
    except (OSError, http.client.HTTPException):
        conn.close()
        return None
    return conn, addr.token


def remote_search(index_dir: Path, parts: list[QueryPart], request: dict[str, Any]) -> RemoteResponse | None:
    """The server's answer, or None when the caller should search in process.

    ``request`` holds the options (k, type, under, min_score, explain, all_segments, exact).
    """
    found = _connect(index_dir)
    if found is None:
        return None
    conn, token = found
    try:
        body_params = dict(request)
        texts = [p for p in parts if p.kind == "text"]
        body_params["parts"] = [{"kind": "text", "value": p.value, "weight": p.weight} for p in texts]
        files = []
        for p in parts:
            if p.kind != "text":
                with open(p.value, "rb") as fh:
                    files.append((p.kind, p.value, fh.read()))  # a file query's kind names its upload field
        headers = {"Authorization": f"Bearer {token}"}
        if files:
            body_params["file_weights"] = [p.weight for p in parts if p.kind != "text"]
            body, headers["Content-Type"] = _multipart({"query": json.dumps(body_params)}, files)
        else:
            body, headers["Content-Type"] = json.dumps(body_params).encode(), "application/json"
        if conn.sock is not None:
            conn.sock.settimeout(SEARCH_TIMEOUT_S)
        conn.timeout = SEARCH_TIMEOUT_S
        conn.request("POST", "/api/search", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        raw_paths = resp.getheader("x-xmr-path-bytes")
    except (OSError, http.client.HTTPException):
        return None  # the server went away mid-request: search in process
    finally:
        conn.close()
    if resp.status == 413:
        return None  # a query file over the server's upload cap: in process it is fine
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if resp.status != 200:
        if isinstance(doc, dict) and "exit_code" in doc:
            raise RemoteError(str(doc.get("error")), int(doc["exit_code"]))
        return None
    return response_from_doc(doc, json.loads(raw_paths) if raw_paths else None)
