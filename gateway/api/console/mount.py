"""Where the console's routes, static files and error pages are added to the app (``install``)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from gateway.settings import Settings

from ..access_log import TemplateRoute
from . import pages_auth, pages_clients, pages_delivery, pages_identity, pages_playground, pages_records
from .web import PREFIX, Console, ConsoleError, LoginRequired, error_page, redirect

__all__ = ["install", "is_console", "error_response"]

_STATIC = Path(__file__).parent / "static"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
_FILES = {path.name: path for path in _STATIC.iterdir() if path.suffix in _TYPES} if _STATIC.is_dir() else {}


async def _static(request: Request) -> Response:
    path = _FILES.get(request.path_params["name"])
    if path is None:
        return error_page(request, 404, "There is no such file.")
    return Response(path.read_bytes(), media_type=_TYPES[path.suffix],
                    headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})


_ROUTES = [
    ("", pages_delivery.overview, "GET"),
    ("/", pages_delivery.overview, "GET"),
    ("/live/overview", pages_delivery.overview_live, "GET"),
    ("/login", pages_auth.login_form, "GET"),
    ("/login", pages_auth.login_submit, "POST"),
    ("/logout", pages_auth.logout, "POST"),
    ("/destinations/{name}/{action:pause|resume}", pages_delivery.pause_or_resume, "POST"),
    ("/dead-letters", pages_delivery.dead_letters, "GET"),
    ("/dead-letters/replay", pages_delivery.replay_matching, "POST"),
    ("/dead-letters/{job_id}", pages_delivery.dead_letter, "GET"),
    ("/dead-letters/{job_id}/{action:replay|purge}", pages_delivery.dead_letter_action, "POST"),
    ("/messages", pages_records.messages, "GET"),
    ("/live/messages", pages_records.messages_live, "GET"),
    ("/quarantine", pages_records.quarantine, "GET"),
    ("/quarantine/{qid}", pages_records.quarantined, "GET"),
    ("/quarantine/{qid}/{action:replay|discard}", pages_records.quarantine_action, "POST"),
    ("/identity/reviews", pages_identity.reviews, "GET"),
    ("/identity/reviews/{task}/{action:accept|reject}", pages_identity.review_action, "POST"),
    ("/clients", pages_clients.clients, "GET"),
    ("/clients", pages_clients.create, "POST"),
    ("/clients/{name}/revoke", pages_clients.revoke, "POST"),
    ("/playground", pages_playground.playground, "GET"),
    ("/playground", pages_playground.run, "POST"),
    ("/static/{name}", _static, "GET"),
]


def _route_path(path: str) -> str:
    # Starlette has no regex path converters; the fixed choices are checked by ``_checked``.
    return PREFIX + re.sub(r"\{action:[a-z|]+\}", "{action}", path)


def is_console(request: Request) -> bool:
    """Whether a request is the console's (its errors are pages), the console being installed."""
    path = request.url.path
    return (path == PREFIX or path.startswith(PREFIX + "/")) and hasattr(request.app.state, "console")


def error_response(request: Request, status: int, message: str) -> Response:
    """An error of a console path as a page (a login redirect for 401)."""
    if status == 401:
        return redirect(request, f"{PREFIX}/login")
    return error_page(request, status, message)


def install(app: FastAPI, settings: Settings) -> None:
    """Add the console to ``app`` (unless ``console.enabled`` is false)."""
    if not settings.console.enabled:
        return
    app.state.console = Console.build(settings)
    choices = {"action"}
    for path, handler, method in _ROUTES:
        route = TemplateRoute(_route_path(path), _checked(handler, path) if choices & set(_params(path)) else handler,
                      methods=[method])
        app.router.routes.append(route)

    async def login_required(request: Request, exc: Exception) -> Response:
        return redirect(request, f"{PREFIX}/login?next={quote(request.url.path)}")

    async def console_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConsoleError)
        return error_page(request, exc.status, exc.message)

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(ConsoleError, console_error)


def _params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]


def _checked(handler: Callable[[Request], Awaitable[Response]], path: str) -> Callable[[Request], Awaitable[Response]]:
    """The handler behind a route whose ``{action}`` takes only the listed words (else a 404 page)."""
    allowed = next(part[1:-1].split(":")[1].split("|") for part in path.split("/") if part.startswith("{action:"))

    async def endpoint(request: Request) -> Response:
        if request.path_params["action"] not in allowed:
            return error_page(request, 404, "There is no such page.")
        return await handler(request)

    return endpoint
