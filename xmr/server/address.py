"""The small file in the index dir that tells clients where the server is.

``server.json`` holds the URL, the per-index token and the server's pid. It is
created with mode 0600 (the token is the only credential the API takes) and
removed when the server stops. Standard library only: the CLI client reads it
on every ``xmr search``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "server.json"


@dataclass(frozen=True)
class ServerAddress:
    url: str  # http://HOST:PORT, no trailing slash
    token: str
    pid: int

    def alive(self) -> bool:
        """Whether the recorded process still exists (a crashed server leaves its file behind)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True


def address_path(index_dir: Path) -> Path:
    return Path(index_dir) / FILE_NAME


def new_token() -> str:
    return secrets.token_urlsafe(32)


def write_address(index_dir: Path, address: ServerAddress) -> Path:
    """Write the file atomically, mode 0600 from the start (never readable by others, even briefly)."""
    path = address_path(index_dir)
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is masked by umask and ignored for an existing file
        os.write(fd, json.dumps(asdict(address)).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def read_address(index_dir: Path) -> ServerAddress | None:
    """The recorded server, or None when there is none (or the file is unreadable or malformed)."""
    try:
        data = json.loads(address_path(index_dir).read_text())
        return ServerAddress(url=str(data["url"]).rstrip("/"), token=str(data["token"]), pid=int(data["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_address(index_dir: Path, token: str) -> None:
    """Remove the file if it is still ours (another server may have replaced it)."""
    current = read_address(index_dir)
    if current is not None and current.token == token:
        with contextlib.suppress(OSError):
            address_path(index_dir).unlink()
