"""The application factory: ``create_app(settings)`` builds a ready FastAPI app.

No work happens at import. The lifespan builds the process's ``Services`` (the
composition root, ``gateway.services``: store, search registry and parser, ingest, and
what the ``ServicePlan`` adds), the authenticator and CapabilityStatement once, and
closes everything on shutdown. Routers only route. Every error leaves as an OperationOutcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from conformance.capability import capability_statement
from gateway import __version__
from gateway.auth import Authenticator, TokenIssuer
from gateway.clock import Clock
from gateway.errors import CLIENT_ERRORS, GatewayError
from gateway.fhir import operation_outcome
from gateway.heap import settle_heap
from gateway.reload import reload_on_sighup
from gateway.services import ServicePlan, Services
from gateway.settings import Settings
from gateway.store import Store

from . import (
    admin_delivery,
    admin_identity,
    admin_quarantine,
    admin_reload,
    bulk_export,
    console,
    fhir_match,
    fhir_read,
    fhir_subscriptions,
    fhir_validate,
    fhir_write,
    health,
    ingest,
    metrics,
    smart,
)
from .access_log import AccessLogMiddleware, TemplateRoute
from .audit import AuditMiddleware
from .auth import authenticate
from .compression import CompressionMiddleware
from .context import AppContext
from .login_throttle import build_login_throttle
from .negotiation import fhir_response
from .plain_routes import plain_routes
from .rate_limit import RateLimitMiddleware, build_rate_limits
from .request_state import request_id_of
from .route_index import IndexedRoutes

log = logging.getLogger("gateway.api")

# How often noted last-use times reach the store (they are noted at most once a minute per client).
LAST_USE_FLUSH_SECONDS = 5.0
#: Served as plain routes, documented by their FastAPI routes.
FHIR_ROUTERS = (fhir_match.router, fhir_validate.router, fhir_read.router, fhir_write.router)
_HTTP_CODES = {404: "not-found", 405: "not-supported", 401: "login", 403: "forbidden", 413: "too-costly"}


def build_context(services: Services, clock: Clock | None = None) -> AppContext:
    """Everything request handlers share, over the process's services (``clock`` times the rate limits
    and the failed-login throttle)."""
    admin = services.settings.admin_token.get_secret_value() if services.settings.admin_token else None
    capability = capability_statement(services.registry, "", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    if services.subscriptions is not None:
        capability = fhir_subscriptions.advertise(capability)
    auth = Authenticator(services.store, admin, policies=services.settings.data_policies())
    tokens = TokenIssuer(services.store, lifetime=services.settings.smart.access_token_seconds)
    limits = build_rate_limits(services.settings, clock)
    throttle = build_login_throttle(services.settings, clock)
    return AppContext.of(services, auth, tokens, capability, limits, throttle)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    plan: ServicePlan | None = None,
    clock: Clock | None = None,
    sighup: bool = False,
) -> FastAPI:
    """Build the gateway app; ``plan`` says which services run beside the API (default: ingest only).

    The lifespan builds the process's ``Services`` (opening ``store`` unless given, which the
    caller then closes), starts them, and stops them on shutdown. ``clock`` is the time the
    rate limits' buckets fill and failed-login windows close by (tests pass a ``ManualClock``;
    default: the system's).
    ``sighup``: a SIGHUP to the process reloads its configuration (``gateway serve``).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.build(settings, plan, store=store)
        try:
            ctx = app.state.ctx = build_context(services, clock)
        except BaseException:
            services.close_now()
            raise
        last_use = asyncio.create_task(_record_last_use(ctx))
        stop_reloading: Callable[[], None] = lambda: None  # noqa: E731
        try:
            await services.start()
            if sighup and services.reloader is not None:
                stop_reloading = reload_on_sighup(services.reloader)
            settle_heap()
            yield
        finally:
            stop_reloading()
            last_use.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await last_use
            await anyio.to_thread.run_sync(ctx.auth.flush)
            await anyio.to_thread.run_sync(ctx.lane.close)
            try:
                await services.stop()
            finally:
                if ctx.limits is not None:
                    await ctx.limits.aclose()
                if ctx.throttle is not None:
                    await ctx.throttle.aclose()

    app = FastAPI(
        title="CHW FHIR gateway",
        version=__version__,
        lifespan=lifespan,
        redirect_slashes=False,
        # Served by `_install_docs` instead, behind a token, when the settings ask for them.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # The gateway's metrics are Prometheus' (/metrics); with no OpenTelemetry provider
        # configured, FastAPI's own telemetry only looked for one on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.router.redirect_slashes = False
    # Pure ASGI middlewares (the last added runs first): the access log sees every answer,
    # 429s included; the audit record is opened outside the rate limit (a refused request is
    # audited too) and outside the exception handlers (a crash still leaves an AuditEvent,
    # outcome 8); the rate limit runs before any route, the fast read's too. Compression is
    # innermost, so the access log counts the bytes sent and the latency includes gzip's time.
    if settings.gzip_min_bytes is not None:
        app.add_middleware(CompressionMiddleware, minimum_size=settings.gzip_min_bytes)
    app.add_middleware(RateLimitMiddleware)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(AccessLogMiddleware, enabled=settings.access_log)
    if settings.metrics.enabled:
        app.add_middleware(metrics.FhirLatencyMiddleware)
    _install_error_handlers(app)
    for router in (health.router, ingest.router, admin_quarantine.router, admin_reload.router,
                   admin_identity.router, admin_delivery.router, smart.router, metrics.router):
        app.include_router(router)
    # The FHIR API as plain Starlette routes (``plain_routes``: reads dominate partner traffic
    # and writes the CHW apps', and FastAPI's per-request machinery bought them nothing), after
    # the routes that take some of its paths (Subscription, $export for a type or an id,
    # .well-known for a type), all matched through an index of path shapes (``IndexedRoutes``).
    fhir: list[Route] = [
        TemplateRoute("/fhir/.well-known/smart-configuration", smart.smart_configuration, methods=["GET"])
    ]
    if settings.subscriptions.enabled:
        fhir += fhir_subscriptions.ROUTES
    fhir += bulk_export.ROUTES
    fhir += [route for router in FHIR_ROUTERS for route in plain_routes(router)]
    app.router.routes[0:0] = [
        IndexedRoutes("/fhir", fhir),
        TemplateRoute("/.well-known/smart-configuration", smart.smart_configuration, methods=["GET"]),
    ]
    console.install(app, settings)
    if settings.api_docs:
        _install_docs(app)
    return app


async def _record_last_use(ctx: AppContext) -> None:
    """Write the clients' last-use times the authenticator noted, off the event loop, every few seconds."""
    while True:
        await asyncio.sleep(LAST_USE_FLUSH_SECONDS)
        await anyio.to_thread.run_sync(ctx.auth.flush)


def _install_docs(app: FastAPI) -> None:
    """``/openapi.json``, ``/docs`` and ``/redoc`` for any authenticated client.

    The API's shape is no secret worth a scope, but the README promises that only
    ``/fhir/metadata`` and the health checks answer without a token.
    """

    def openapi_with_bearer() -> dict[str, Any]:
        if app.openapi_schema is None:
            documented = [*app.routes, *(route for router in FHIR_ROUTERS for route in router.routes)]
            schema = get_openapi(title=app.title, version=app.version, routes=documented)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API client's token"}
            }
            schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi_with_bearer  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document(request: Request) -> JSONResponse:
        authenticate(request)
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        authenticate(request)
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        authenticate(request)
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")


#: Seconds a client is asked to wait when the store cannot be reached (``Retry-After`` of the 503).
UNAVAILABLE_RETRY_AFTER = 5


def _install_error_handlers(app: FastAPI) -> None:
    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        if not isinstance(exc, CLIENT_ERRORS):
            if exc.status == 503:
                return _unavailable(request, exc)
            # The gateway's own failure (store, queue, connector, config): re-raised, it gets
            # the same bare 500 and log as any unexpected exception, never its message.
            raise exc
        if console.is_console(request):
            return console.error_response(request, exc.status, str(exc))
        return fhir_response(exc.outcome(), status=exc.status, headers=exc.headers or None)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if console.is_console(request):
            message = {404: "There is no such page.", 405: "That page does not take this request."}
            return console.error_response(request, exc.status_code, message.get(exc.status_code, "Request failed."))
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
        # Each field with pydantic's reason ("Input should be 'held', 'replayed', …"): its messages
        # describe what is expected, never quote the value sent.
        reasons = "; ".join(f"{at}: {e.get('msg', 'invalid')}" for at, e in zip(where, errors, strict=False))
        detail = f"the request is malformed: {reasons}" if reasons else "the request is malformed"
        return fhir_response(operation_outcome("invalid", detail, expression=where), status=400)

    async def client_gone(request: Request, exc: Exception) -> Response:
        # The client closed its connection before its body arrived (a tablet losing its signal
        # mid-upload, a client given up): its failure, not ours. Nobody reads the answer; the
        # access log, audit and metrics record a client error, and nothing is logged as a crash.
        assert isinstance(exc, ClientDisconnect)
        detail = "the client closed the connection before its request body arrived; nothing was applied"
        if console.is_console(request):
            return console.error_response(request, 400, "The request was cut off; nothing was changed.")
        return fhir_response(operation_outcome("incomplete", detail), status=400)

    async def unexpected(request: Request, exc: Exception) -> Response:
        # The type and the stack, not the message: messages can carry request data.
        stack = "".join(traceback.format_tb(exc.__traceback__))
        request_id = request_id_of(request.scope) or "-"
        log.error("unhandled %s on %s %s (request id %s)\n%s", type(exc).__name__, request.method,
                  _route_of(request), request_id, stack)
        if console.is_console(request):
            response = console.error_response(
                request, 500, f"Internal error; nothing was changed (request id {request_id}).")
            response.headers["X-Request-ID"] = request_id
            return response
        # Answered outside the access log middleware, so the id header is set here.
        return fhir_response(
            operation_outcome("exception", f"internal error; the request was not applied (request id {request_id})"),
            status=500,
            headers={"X-Request-ID": request_id},
        )

    def _unavailable(request: Request, exc: GatewayError) -> Response:
        # The store cannot be reached now (a database restart, a network cut): not a bug, and
        # nothing was applied. The client is told to retry; the log names the types, no stack.
        request_id = request_id_of(request.scope) or "-"
        cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "-"
        log.warning("%s (%s) on %s %s (request id %s): answered 503", type(exc).__name__, cause,
                    request.method, _route_of(request), request_id)
        headers = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)}
        if console.is_console(request):
            response = console.error_response(
                request, 503, f"The store is unavailable; nothing was changed. Try again (request id {request_id}).")
            response.headers.update(headers)
            return response
        return fhir_response(
            operation_outcome("transient", f"the store is unavailable; the request was not applied, retry later"
                                           f" (request id {request_id})"),
            status=503,
            headers=headers,
        )

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, unexpected)


def _route_of(request: Request) -> str:
    """The matched route's template (``/fhir/{rtype}/{rid}``), as the access log names it: the path as
    sent can hold a source's record id, or a percent-encoded CR LF that would forge a log line."""
    route = getattr(request.scope.get("route"), "path", None)
    return route if isinstance(route, str) else "(no route)"
