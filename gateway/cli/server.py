"""Running the API under uvicorn, exiting 0 after a graceful stop on SIGTERM or SIGINT.

``run_workers`` starts several API processes on one socket (uvicorn's supervisor); each
builds its app from the same configuration (``app_factory``, told the file through
``GATEWAY_CONFIG``) and runs its own services, which share the PostgreSQL store and the
queue as separate pods would.

uvicorn finishes the requests in flight and the lifespan shutdown (delivery worker drained,
store checkpointed and closed), then raises the signal again so the process dies of it: exit
status 143. Supervisors (systemd, Kubernetes, compose) read that as a crash. A stop that
completed cleanly is a success, so this server keeps the signal to itself.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

import uvicorn

__all__ = ["app_factory", "run_server", "run_workers"]


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()  # shut down gracefully: nothing to re-raise


def run_server(app: Any, **options: Any) -> None:
    """``uvicorn.run(app, **options)``, but a graceful stop exits 0."""
    _Server(uvicorn.Config(app, **options)).run()


def app_factory() -> Any:
    """The app of one worker process, from the configuration ``run_workers`` handed down."""
    from gateway.api import create_app
    from gateway.cli.logs import configure_logging
    from gateway.services import ServicePlan
    from gateway.settings import find_config_file, load_settings

    settings = load_settings(find_config_file(None, environ=os.environ))
    configure_logging(settings)
    return create_app(settings, plan=ServicePlan.for_serve(settings, os.environ))


def run_workers(settings: Any, workers: int, **options: Any) -> None:
    """Serve with ``workers`` API processes built by ``app_factory``."""
    if settings.config_file is not None:
        os.environ["GATEWAY_CONFIG"] = str(os.path.abspath(settings.config_file))
    uvicorn.run("gateway.cli.server:app_factory", factory=True, workers=workers, **options)
