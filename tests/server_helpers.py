"""Start a real ``xmr serve`` process on 127.0.0.1 and talk HTTP to it (standard library only)."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cli_helpers import invoke

from xmr.server.address import read_address

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "media"
START_TIMEOUT_S = 60


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    url: str
    token: str
    proc: subprocess.Popen
    index_dir: Path

    @property
    def host_port(self) -> tuple[str, int]:
        u = urlsplit(self.url)
        return u.hostname or "127.0.0.1", int(u.port or 0)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: bool = True,
        timeout: float = 60,
    ) -> Reply:
        host, port = self.host_port
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        h = {"Authorization": f"Bearer {self.token}"} if token else {}
        h.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def search(self, payload: dict[str, Any], **kw: Any) -> Reply:
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return self.request("POST", "/api/search", body=json.dumps(payload).encode(), headers=headers, **kw)

    def upload(self, field: str, name: str, data: bytes, payload: dict[str, Any] | None = None, **kw: Any) -> Reply:
        body, ctype = multipart({"query": json.dumps(payload or {})}, [(field, name, data)])
        return self.request("POST", "/api/search", body=body, headers={"Content-Type": ctype}, **kw)


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in files:
        out.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def index_media(root: Path, index_dir: Path | None = None) -> Path:
    """A copy of the fixture media, indexed (fake encoders must be selected by the caller)."""
    shutil.copytree(FIXTURES, root)
    args = ["index", str(root), "--quiet", "--workers", "0"]
    if index_dir is not None:
        args += ["--index", str(index_dir)]
    res = invoke(*args)
    assert res.exit_code == 0, res.stderr
    return root


@contextlib.contextmanager
def running_server(index_dir: Path, *args: str) -> Iterator[Server]:
    """``xmr serve --port 0`` on ``index_dir``; stopped (SIGINT, then SIGKILL) on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "xmr", "serve", "--port", "0", "--index", str(index_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        addr = None
        while time.monotonic() < deadline and proc.poll() is None:
            addr = read_address(index_dir)
            if addr is not None and addr.pid == proc.pid:
                break
            time.sleep(0.05)
        if proc.poll() is not None or addr is None or addr.pid != proc.pid:
            proc.kill()
            out, err = proc.communicate(timeout=10)
            raise AssertionError(f"xmr serve did not start: {err}")
        server = Server(addr.url, addr.token, proc, index_dir)
        # the address file is written before uvicorn accepts: wait for the first answer
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if server.request("GET", "/api/ping", timeout=2).status == 200:
                    break
            time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
