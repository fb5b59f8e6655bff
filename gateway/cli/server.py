"""Running the API under uvicorn, exiting 0 after a graceful stop on SIGTERM or SIGINT.

``run_workers`` starts several API processes on one socket (uvicorn's supervisor); each
builds its app from the same configuration (``app_factory``, told the file through
``GATEWAY_CONFIG``) and runs its own services, which share the PostgreSQL store and the
queue as separate pods would.

uvicorn finishes the requests in flight and the lifespan shutdown (delivery worker drained,
store checkpointed and closed), then raises the signal again so the process dies of it: exit
status 143. Supervisors (systemd, Kubernetes, compose) read that as a crash. A stop that
completed cleanly is a success, so this server keeps the signal to itself.

SIGHUP reloads the configuration's sources, mapping sets and pull schedules in place
(``gateway.reload``). uvicorn itself would let it end a single process (it handles only
SIGINT and SIGTERM) and, under ``--workers``, restart every worker process: a restart
that applies every setting in the file, drops what each process holds (rate-limit buckets,
caches) and, when the new file is broken, leaves the old workers running with no word
about why. Here the supervisor passes SIGHUP on to each worker instead, and each reloads
as one process does, refusing a broken configuration and logging every problem. A worker
still starting when one comes reloads once it runs: it starts with SIGHUP blocked and then
remembers one until its app takes the signal over (``gateway.reload.hold_sighup``); before,
such a worker ignored it (or died of it) and went on serving the old configuration.

Slow clients (``client_timeouts``): uvicorn waits for a request's head and body as long as a
client likes, so a few thousand connections that each send a byte every few seconds (or
nothing at all) hold every file descriptor the process may open, without a token
(slowloris). ``GuardedHttpProtocol`` gives each request head ``head_seconds`` from the
connection's opening (or the request's first byte) and each body ``body_seconds`` plus a
second for every ``body_min_rate`` bytes received; a client slower than that gets ``408``
(when no answer has started) and its connection is closed. The app then sees the client
gone (``http.disconnect``). Time the server itself holds the body back (reading paused
while the app is busy, a ``100 Continue`` not yet sent) does not count.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from gateway.settings import ClientTimeoutSettings

__all__ = ["GatewayConfig", "GuardedHttpProtocol", "app_factory", "run_server", "run_workers"]

#: The answer to a client too slow with its request (then the connection closes).
_TIMEOUT_BODY = (b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"timeout",'
                 b'"diagnostics":"the request did not arrive in time; send it again"}]}')
_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/fhir+json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))


class GatewayConfig(uvicorn.Config):
    """uvicorn's configuration with the gateway's HTTP protocol and its ``client_timeouts``
    (a module-level class: ``--workers`` hands it to each process by pickling)."""

    def __init__(self, app: Any, *, client_timeouts: ClientTimeoutSettings | None = None, **options: Any) -> None:
        super().__init__(app, http=GuardedHttpProtocol, **options)
        self.client_timeouts = client_timeouts or ClientTimeoutSettings()


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline on each request's head and body (module docstring)."""

    def connection_made(self, transport: Any) -> None:  # noqa: D102
        super().connection_made(transport)
        self._limits: ClientTimeoutSettings = getattr(self.config, "client_timeouts", None) or ClientTimeoutSettings()
        self._deadline: Any = None  # the TimerHandle of the phase running, if any
        self._in_body = False
        self._body_started = 0.0
        self._body_bytes = 0
        self._arm(self._limits.head_seconds)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:  # noqa: D102
        super().on_message_begin()
        # The next request's first byte on a kept-alive connection (the first request's head
        # is timed from the connection's opening).
        if self._deadline is None:
            self._in_body = False
            self._arm(self._limits.head_seconds)

    def on_headers_complete(self) -> None:  # noqa: D102
        super().on_headers_complete()
        self._disarm()
        self._in_body = True
        self._body_started = self.loop.time()
        self._body_bytes = 0
        self._arm(self._limits.body_seconds)

    def on_body(self, body: bytes) -> None:  # noqa: D102
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:  # noqa: D102
        self._disarm()
        self._in_body = False
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._in_body:
            rate = self._limits.body_min_rate
            left = (self._body_started + self._limits.body_seconds + (self._body_bytes / rate if rate else 0.0)
                    - self.loop.time())
            if self.flow.read_paused or cycle.waiting_for_100_continue:
                self._arm(self._limits.body_seconds)  # the server holds the body back, not the client
                return
            if left > 0:
                self._arm(left)
                return
            if not cycle.response_started:
                self.transport.write(_TIMEOUT_408)
            if not cycle.response_complete:
                # The app sees the client gone: no answer over the 408, no wait for the rest of the body.
                cycle.disconnected = True
                cycle.message_event.set()
        else:
            if cycle is not None and not cycle.response_complete:
                self._arm(self._limits.head_seconds)  # still answering the request before this one
                return
            self.transport.write(_TIMEOUT_408)
        self.transport.close()


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()  # shut down gracefully: nothing to re-raise


@contextmanager
def _sighup_blocked() -> Generator[None, None, None]:
    """SIGHUP blocked while worker processes start: they inherit the mask, so one sent before
    they can take it waits (``hold_sighup`` unblocks it) instead of ending them (its default)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


class _Supervisor(Multiprocess):
    def init_processes(self) -> None:
        with _sighup_blocked():
            super().init_processes()

    def keep_subprocess_alive(self) -> None:
        with _sighup_blocked():
            super().keep_subprocess_alive()

    def handle_ttin(self) -> None:
        with _sighup_blocked():
            super().handle_ttin()

    def handle_hup(self) -> None:
        logging.getLogger("gateway.cli").info("SIGHUP: every worker process reloads its configuration")
        for process in self.processes:
            if process.pid is not None and process.process.is_alive():
                os.kill(process.pid, signal.SIGHUP)


def run_server(app: Any, **options: Any) -> None:
    """``uvicorn.run(app, **options)``, but a graceful stop exits 0 (and SIGHUP is the app's)."""
    from gateway.reload import hold_sighup

    hold_sighup()
    _Server(GatewayConfig(app, **options)).run()


def app_factory() -> Any:
    """The app of one worker process, from the configuration ``run_workers`` handed down."""
    from gateway.api import create_app
    from gateway.cli.logs import configure_logging
    from gateway.reload import hold_sighup
    from gateway.services import ServicePlan
    from gateway.settings import find_config_file, load_settings

    hold_sighup()
    settings = load_settings(find_config_file(None, environ=os.environ))
    configure_logging(settings)
    return create_app(settings, plan=ServicePlan.for_serve(settings, os.environ), sighup=True)


def run_workers(settings: Any, workers: int, **options: Any) -> None:
    """Serve with ``workers`` API processes built by ``app_factory`` (what ``uvicorn.run`` does for
    several workers, with the supervisor passing SIGHUP on: see the module docstring)."""
    if settings.config_file is not None:
        os.environ["GATEWAY_CONFIG"] = str(os.path.abspath(settings.config_file))
    config = GatewayConfig("gateway.cli.server:app_factory", factory=True, workers=workers, **options)
    _Supervisor(config, sockets=[config.bind_socket()]).run()
