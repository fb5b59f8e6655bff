"""The DHIS2 sandbox application factory.

    app = create_sandbox_app(Path("state/"), FaultConfig(error_rate=0.1))

serves the subset of the DHIS2 Web API the gateway's connector uses, backed by the bundled
demo metadata and a SQLite file of what it accepted (in memory when the path is None).
``/api/NN/…`` (API version prefixes) is served like ``/api/…``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from dhis2_sandbox import routes_admin, routes_aggregate, routes_metadata, routes_tracker
from dhis2_sandbox.catalog import load_catalog
from dhis2_sandbox.context import ApiError, SandboxSettings, SandboxState
from dhis2_sandbox.faults import (
    ASGIApp,
    FaultConfig,
    FaultInjector,
    FaultSchedule,
    Receive,
    Scope,
    Send,
)
from dhis2_sandbox.storage import open_store
from dhis2_sandbox.tracker_jobs import TrackerJobs
from dhis2_sandbox.webmessages import web_message

__all__ = ["create_sandbox_app"]

logger = logging.getLogger(__name__)

_VERSIONED = re.compile(r"^/api/\d{2}/")


class _ApiVersionPrefix:
    """Serve ``/api/41/x`` as ``/api/x`` (DHIS2 accepts versioned paths 28–43)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _VERSIONED.match(scope["path"]):
            scope = dict(scope)
            scope["path"] = "/api/" + scope["path"][8:]
            scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return web_message(exc.status, exc.message, error_code=exc.error_code)


async def _bad_request(request: Request, exc: Exception) -> JSONResponse:
    return web_message(400, "Invalid request parameters")


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("sandbox request failed: %s %s", request.method, request.url.path)
    return web_message(500, f"An unexpected error occurred: {type(exc).__name__}")


def create_sandbox_app(
    state_dir_or_db: Path | None,
    faults: FaultConfig | None = None,
    settings: SandboxSettings | None = None,
) -> FastAPI:
    """Build the sandbox app; ``app.state.sandbox`` holds its store, catalog and fault schedule."""
    settings = settings or SandboxSettings()
    schedule = FaultSchedule(faults or FaultConfig())
    state = SandboxState(
        catalog=load_catalog(settings.metadata_path),
        store=open_store(state_dir_or_db),
        settings=settings,
        faults=schedule,
        jobs=TrackerJobs(delay=settings.job_delay),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await state.jobs.drain()

    app = FastAPI(
        title="DHIS2 sandbox (CHW FHIR gateway)",
        lifespan=lifespan,
        docs_url="/sandbox/docs",
        redoc_url=None,
        openapi_url="/sandbox/openapi.json",
    )
    app.state.sandbox = state
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.add_exception_handler(Exception, _server_error)
    app.include_router(routes_admin.router)
    app.include_router(routes_tracker.router)
    app.include_router(routes_aggregate.router)
    app.include_router(routes_metadata.router)  # last: its /api/{collection} catches the rest
    app.add_middleware(_ApiVersionPrefix)
    app.add_middleware(FaultInjector, schedule=schedule)
    return app
