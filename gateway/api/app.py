"""The application factory: ``create_app(settings)`` builds a ready FastAPI app.

No work happens at import. The lifespan opens the store (migrating it), builds the
search registry, parser, authenticator and CapabilityStatement once, and closes
everything on shutdown. Every error leaves as an OperationOutcome.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conformance.capability import capability_statement
from gateway import __version__
from gateway.errors import CLIENT_ERRORS, GatewayError
from gateway.fhir.outcome import operation_outcome
from gateway.heap import settle_heap
from gateway.ingest import ingest_hook
from gateway.search.query import QueryParser
from gateway.search.registry import default_registry
from gateway.settings import Settings
from gateway.store import open_store
from gateway.store.sql import SqlStore

from . import admin_delivery, admin_quarantine, fhir_read, fhir_write, health, ingest
from .auth import Authenticator
from .context import AppContext
from .negotiation import fhir_response

log = logging.getLogger("gateway.api")

Hook = Callable[[FastAPI, AppContext], Awaitable[Callable[[], Awaitable[None]] | None]]

_HTTP_CODES = {404: "not-found", 405: "not-supported", 401: "login", 403: "forbidden", 413: "too-costly"}


def build_context(settings: Settings, store: SqlStore | None = None) -> AppContext:
    """Open the store and build everything request handlers share."""
    registry = default_registry()
    store = store or open_store(settings.store_url)
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None
    return AppContext(
        settings=settings,
        store=store,
        registry=registry,
        parser=QueryParser(registry, settings.search.default_count, settings.search.max_count),
        auth=Authenticator(store, admin),
        capability=capability_statement(registry, "", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")),
    )


def create_app(settings: Settings, *, store: SqlStore | None = None, hooks: list[Hook] | None = None) -> FastAPI:
    """Build the gateway app; ``hooks`` start extra services (workers) in the lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = build_context(settings, store)
        app.state.ctx = ctx
        app.state.store = ctx.store
        stops: list[Callable[[], Awaitable[None]]] = []
        try:
            for hook in [*_BUILTIN_HOOKS, *(hooks or [])]:
                stop = await hook(app, ctx)
                if stop is not None:
                    stops.append(stop)
            settle_heap()
            yield
        finally:
            for stop in reversed(stops):
                await stop()
            if store is None:
                ctx.store.close()

    app = FastAPI(
        title="CHW FHIR gateway",
        version=__version__,
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.router.redirect_slashes = False
    _install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(fhir_read.router)
    app.include_router(fhir_write.router)
    for router in _optional_routers():
        app.include_router(router)
    # Reads dominate partner traffic; matching them first, as a plain Starlette route,
    # keeps them within reach of the framework's own ceiling (bench/read_search.py).
    app.router.routes.insert(0, Route("/fhir/{rtype}/{rid}", fhir_read.fast_read, methods=["GET"],
                                      include_in_schema=False))
    return app


# Services every app has (ingest compiles the mappings at start-up and refuses to start on
# broken ones); ``hooks`` passed to create_app add optional ones such as delivery workers.
_BUILTIN_HOOKS: list[Hook] = [ingest_hook]


def _optional_routers() -> list[Any]:
    """Routers of the ingest and admin areas."""
    return [ingest.router, admin_quarantine.router, admin_delivery.router]


def _install_error_handlers(app: FastAPI) -> None:
    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        if not isinstance(exc, CLIENT_ERRORS):
            # The gateway's own failure (store, queue, connector, config): re-raised, it gets
            # the same bare 500 and log as any unexpected exception, never its message.
            raise exc
        return fhir_response(exc.outcome(), status=exc.status, headers=exc.headers or None)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "processing")
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            detail = f"no FHIR endpoint at {request.url.path[:100]}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not supported at {request.url.path[:100]}"
        return fhir_response(operation_outcome(code, detail), status=exc.status_code,
                             headers=dict(exc.headers) if exc.headers else None)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        where = [".".join(str(p) for p in e.get("loc", ())) for e in errors[:5]]
        return fhir_response(operation_outcome("invalid", "the request is malformed", expression=where), status=400)

    async def unexpected(request: Request, exc: Exception) -> Response:
        # The type and the stack, not the message: messages can carry request data.
        stack = "".join(traceback.format_tb(exc.__traceback__))
        log.error("unhandled %s on %s %s\n%s", type(exc).__name__, request.method, request.url.path, stack)
        return fhir_response(operation_outcome("exception", "internal error; the request was not applied"),
                             status=500)

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
