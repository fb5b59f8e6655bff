"""Run an ASGI app under a real uvicorn server on a free loopback port, in a thread.

Real FHIR clients (fhirpy, SMART fhirclient) open their own HTTP connections, so they need
a listening socket rather than an in-process transport::

    with LiveServer(app) as server:
        client = SyncFHIRClient(server.url + "/fhir")
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Any

import uvicorn

_START_TIMEOUT = 30.0


class LiveServer:
    """A uvicorn server for ``app`` on ``127.0.0.1:<free port>``, started and stopped as a context."""

    def __init__(self, app: Any, host: str = "127.0.0.1", config_type: type[uvicorn.Config] = uvicorn.Config,
                 **options: Any) -> None:
        """``config_type`` and ``options``: another uvicorn configuration (the gateway's own, ``GatewayConfig``)."""
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        config = config_type(
            app,
            log_level="warning",
            access_log=False,
            ws="none",  # no websockets import: its deprecation warnings would fail the suite
            lifespan="on",
            timeout_graceful_shutdown=5,
            **options,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        """``http://host:port`` with no trailing slash."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Start serving; return once the server accepts connections (or raise)."""
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(_START_TIMEOUT / 0.02)):
            if self._server.started:
                return
            if not self._thread.is_alive():
                break
            deadline.wait(0.02)
        self.stop()
        raise RuntimeError("the live server did not start (see the log above)")

    def stop(self) -> None:
        """Ask the server to exit, wait for it, and release the socket."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=_START_TIMEOUT)
        self._sock.close()

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
