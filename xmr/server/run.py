"""Start and stop ``xmr serve``: host policy, the address file, uvicorn."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmr import paths, procs
from xmr.errors import UsageError
from xmr.server.address import ServerAddress, new_token, read_address, remove_address, write_address
from xmr.server.uploads import DEFAULT_MAX_UPLOAD_BYTES
from xmr.settings import Settings


def one_blas_thread() -> bool:
    """One OpenBLAS thread for this process, unless the user chose (``OPENBLAS_NUM_THREADS``).

    A warm query's matrix products are small (a query against a rotation, 2,000 rescored rows),
    and after each one OpenBLAS's idle threads spin (sched_yield), taking the core the text
    encoder needs (measured at 1M with codes: the server's CPU a query 63 -> 44 ms; at 5M the p50
    54 -> 52 ms, benchmarks/results/codes.txt). Only effective before numpy is imported; returns
    whether it was set."""
    import sys

    if "numpy" in sys.modules or "OPENBLAS_NUM_THREADS" in os.environ:
        return False
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    return True


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback address unless the user asked for it explicitly."""
    if not is_loopback(host) and not allow_remote:
        raise UsageError(
            f"refusing to listen on {host}: it is reachable from other machines",
            hint="bind 127.0.0.1 (the default), or pass --allow-remote if you really mean it",
        )


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    allow_remote: bool = False
    idle_unload_min: float = 15.0
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    watch: Sequence[str] = ()  # keep these paths indexed while serving (xmr.watch)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it a response written as headers + body waits 40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or exc
        raise UsageError(f"cannot listen on {host}:{port}: {reason}", hint="choose another --port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(
    index_dir: Path | None = None,
    settings: Settings | None = None,
    options: ServeOptions | None = None,
    *,
    on_ready: Callable[[str], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> None:
    """Run the server until interrupted. ``on_ready(launch_url)`` is called once it listens;
    ``notify`` gets the searches' one-line notices (a one-time model preparation, a damaged ANN file).

    The launch URL carries the token in its fragment (``#token=``), which the
    browser never sends to the server.
    """
    import uvicorn

    from xmr.server.app import ServerConfig, create_app
    from xmr.server.state import WarmIndex
    from xmr.server.uploads import Sandbox

    # The server shares the cores with whatever else runs; spinning OpenMP threads collapse
    # under contention (CLIP ViT-B-32 text, one query, load 7 on 2 cores: 1629 ms spinning,
    # 143 ms passive). Only effective before torch is first imported (at the first query).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from xmr.encoders import towers

    towers.long_lived()  # many queries: pre-packed weights pay off
    options = options or ServeOptions()
    settings = settings or Settings.from_env()
    index_dir = index_dir or paths.index_dir()
    one_blas_thread()
    check_host(options.host, options.allow_remote)
    previous = read_address(index_dir)
    if previous is not None and previous.alive() and previous.pid != os.getpid():
        raise UsageError(f"a server is already running on this index at {previous.url} (pid {previous.pid})")
    watcher = None
    if options.watch:
        from xmr.watch import BackgroundWatch

        # before the warm index: it creates the catalogue a fresh index lacks
        watcher = BackgroundWatch(options.watch, index_dir, settings, notify=notify)
    warm = WarmIndex(index_dir, settings, idle_unload_s=options.idle_unload_min * 60, notify=notify)
    sandbox = Sandbox()
    sandbox.start()
    sock = None
    token = new_token()
    # SIGTERM/SIGHUP: the same clean stop as Ctrl-C (server.json removed, the sandbox ended), exit 0
    restore_signals = procs.raise_on_terminate()
    try:
        sock = _bind(options.host, options.port)
        port = sock.getsockname()[1]
        shown = f"[{options.host}]" if ":" in options.host and not options.host.startswith("[") else options.host
        url = f"http://{shown}:{port}"
        config = ServerConfig(
            index_dir=index_dir,
            token=token,
            host=shown,
            port=port,
            max_upload_bytes=options.max_upload_bytes,
            any_host=options.allow_remote and options.host.strip("[]") in ("0.0.0.0", "::"),
        )
        app = create_app(config, warm, sandbox)
        server = _server_class(uvicorn)(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30)
        )
        write_address(index_dir, ServerAddress(url=url, token=token, pid=os.getpid()))
        if on_ready is not None:
            started = server.startup

            async def startup(sockets: list[socket.socket] | None = None) -> None:
                await started(sockets=sockets)
                on_ready(f"{url}/#token={token}")

            server.startup = startup  # type: ignore[method-assign]
        if watcher is not None:
            watcher.start()
        server.run(sockets=[sock])
    except procs.Terminated:
        pass
    finally:
        if watcher is not None:
            watcher.close()  # a run in progress ends after its current commit
        restore_signals()
        remove_address(index_dir, token)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        sandbox.close()
        warm.close()


def _server_class(uvicorn: Any) -> Any:
    """uvicorn.Server that also stops gracefully on SIGHUP (a closed terminal), as on SIGINT/SIGTERM.

    Left to ``procs.raise_on_terminate``, SIGHUP raised ``Terminated`` wherever the event loop
    was; inside one of asyncio's callbacks the exception is logged and swallowed, and the server
    went on running (seen on a loaded machine: no exit within 30 s)."""
    import signal
    import threading

    class Server(uvicorn.Server):  # type: ignore[misc, name-defined]
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            hup = getattr(signal, "SIGHUP", None)
            if hup is None or threading.current_thread() is not threading.main_thread():
                with super().capture_signals():
                    yield
                return
            previous = signal.signal(hup, self.handle_exit)
            try:
                with super().capture_signals():
                    yield
            finally:
                signal.signal(hup, previous)

    return Server
