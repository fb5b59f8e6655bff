"""Serving the sandbox with uvicorn, with real TCP connection resets.

A connection reset cannot be expressed in ASGI, so the sandbox runs on a uvicorn protocol
class that hands each request a ``dhis2.sandbox.reset`` callable: it sets ``SO_LINGER`` to
zero and aborts the transport, so the client sees an RST, as when a proxy or DHIS2 dies
mid-request.

``SandboxServer`` runs uvicorn in a background thread on a free loopback port (tests,
benchmarks); ``serve`` runs it in the foreground (``gateway sandbox dhis2``).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from types import TracebackType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from dhis2_sandbox.faults import RESET_EXTENSION

__all__ = ["ResettableHttpProtocol", "SandboxServer", "serve"]

try:  # httptools is the faster parser; h11 is always there
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _BaseProtocol
except ImportError:  # pragma: no cover - depends on the installed extras
    _BaseProtocol = H11Protocol  # type: ignore[misc,assignment]


class ResettableHttpProtocol(_BaseProtocol):
    """uvicorn's HTTP protocol plus a per-request "reset this connection" extension."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})[RESET_EXTENSION] = self._reset
            await inner(scope, receive, send)

        self.app = app

    def _reset(self) -> None:
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


def _log_config() -> dict[str, Any]:
    """uvicorn's logging set-up with the time (and its UTC offset) on every line; its default has none."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"] = "%(asctime)s %(levelname)s %(name)s: %(message)s"
        formatter["datefmt"] = "%Y-%m-%dT%H:%M:%S%z"
        formatter["use_colors"] = False
    return config


def _config(app: Any, *, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=ResettableHttpProtocol,
        log_level=log_level,
        log_config=_log_config(),
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )


class SandboxServer:
    """Run an ASGI app on ``127.0.0.1:<free port>`` in a thread; a context manager."""

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets whose
        # protocol says TCP, and without it keep-alive requests stall 40 ms on delayed ACKs.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        self.app = app
        self._server = uvicorn.Server(_config(app, log_level=log_level))
        self._thread = threading.Thread(target=self._run, name=f"dhis2-sandbox-{self.port}", daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self) -> SandboxServer:
        """Start serving; returns once the server accepts connections."""
        self._thread.start()
        for _ in range(500):
            if self._server.started:
                return self
            if not self._thread.is_alive():
                raise RuntimeError("the sandbox server failed to start")
            threading.Event().wait(0.01)
        raise RuntimeError("the sandbox server did not start within 5 s")

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve(app: Any, *, host: str, port: int, log_level: str = "info") -> None:
    """Serve in the foreground until interrupted."""
    config = _config(app, log_level=log_level)
    config.host, config.port = host, port
    uvicorn.Server(config).run()
