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
as one process does, refusing a broken configuration and logging every problem.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

__all__ = ["app_factory", "run_server", "run_workers"]


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()  # shut down gracefully: nothing to re-raise


class _Supervisor(Multiprocess):
    def handle_hup(self) -> None:
        logging.getLogger("gateway.cli").info("SIGHUP: every worker process reloads its configuration")
        for process in self.processes:
            if process.pid is not None and process.process.is_alive():
                os.kill(process.pid, signal.SIGHUP)


def _hold_sighup() -> None:
    """Ignore SIGHUP until the app's lifespan takes it over (its default action ends the process)."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def run_server(app: Any, **options: Any) -> None:
    """``uvicorn.run(app, **options)``, but a graceful stop exits 0 (and SIGHUP is the app's)."""
    _hold_sighup()
    _Server(uvicorn.Config(app, **options)).run()


def app_factory() -> Any:
    """The app of one worker process, from the configuration ``run_workers`` handed down."""
    from gateway.api import create_app
    from gateway.cli.logs import configure_logging
    from gateway.services import ServicePlan
    from gateway.settings import find_config_file, load_settings

    _hold_sighup()
    settings = load_settings(find_config_file(None, environ=os.environ))
    configure_logging(settings)
    return create_app(settings, plan=ServicePlan.for_serve(settings, os.environ), sighup=True)


def run_workers(settings: Any, workers: int, **options: Any) -> None:
    """Serve with ``workers`` API processes built by ``app_factory`` (what ``uvicorn.run`` does for
    several workers, with the supervisor passing SIGHUP on: see the module docstring)."""
    if settings.config_file is not None:
        os.environ["GATEWAY_CONFIG"] = str(os.path.abspath(settings.config_file))
    config = uvicorn.Config("gateway.cli.server:app_factory", factory=True, workers=workers, **options)
    _Supervisor(config, sockets=[config.bind_socket()]).run()
