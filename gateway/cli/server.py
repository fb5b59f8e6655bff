"""Running the API under uvicorn, exiting 0 after a graceful stop on SIGTERM or SIGINT.

uvicorn finishes the requests in flight and the lifespan shutdown (delivery worker drained,
store checkpointed and closed), then raises the signal again so the process dies of it: exit
status 143. Supervisors (systemd, Kubernetes, compose) read that as a crash. A stop that
completed cleanly is a success, so this server keeps the signal to itself.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

import uvicorn

__all__ = ["run_server"]


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()  # shut down gracefully: nothing to re-raise


def run_server(app: Any, **options: Any) -> None:
    """``uvicorn.run(app, **options)``, but a graceful stop exits 0."""
    _Server(uvicorn.Config(app, **options)).run()
