"""What every console page shares: the templates, the session check, CSRF, and how pages and errors render.

Handlers call ``await login(request)`` (a logged-in admin, else a redirect to the login page)
and, on POST, ``await checked_form(request, console)`` (the form, else 403 without the session's
CSRF token). Pages render with ``page(...)``, which also refreshes the session cookie.
Templates autoescape everything; nothing here logs a value from a record.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gateway.api.audit import note_of
from gateway.api.context import AppContext, ctx_of
from gateway.auth import ADMIN_TOKEN_NAME
from gateway.errors import RequestError
from gateway.settings import Settings

from .session import COOKIE, Session, SessionSigner

__all__ = ["ADMIN_TOKEN_SUBJECT", "Console", "ConsoleError", "LoginRequired", "checked_form", "console_of",
           "error_page", "login", "page", "redirect"]

#: The session subject of the bootstrap ``admin_token`` (not a valid client name, so never a client's).
ADMIN_TOKEN_SUBJECT = "~admin-token"
PREFIX = "/console"
_HERE = Path(__file__).parent


class LoginRequired(RequestError):
    """The request needs a logged-in admin; it is answered with a redirect to the login page."""

    def __init__(self, diagnostics: str = "log in first") -> None:
        super().__init__(diagnostics, status=401, code="login")


class ConsoleError(RequestError):
    """A console request that cannot be served; answered with an error page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status=status)
        self.message = message


def _when(value: float | datetime | None) -> str:
    if value is None:
        return ""
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["age"] = _age
    env.filters["urlpart"] = lambda value: quote(str(value), safe="")
    return env


@dataclass(slots=True)
class Console:
    """The console of one app: its templates and session signer (``app.state.console``)."""

    env: Environment
    signer: SessionSigner
    secure: bool | None  # the Secure cookie flag; None: when the request came over https

    @classmethod
    def build(cls, settings: Settings) -> Console:
        """The console for ``settings`` (a random session key per process when none is configured)."""
        configured = settings.console.session_key
        key = configured.get_secret_value().encode() if configured is not None else os.urandom(32)
        secure = settings.console.secure_cookie
        if secure is None and settings.public_base_url and settings.public_base_url.startswith("https://"):
            secure = True
        return cls(_environment(), SessionSigner(key, settings.console.session_hours * 3600), secure)


def console_of(request: Request) -> Console:
    """The console of the request's app."""
    console: Console = request.app.state.console
    return console


def _session(request: Request, console: Console) -> Session | None:
    cached: Session | None = request.scope.get("gateway.console_session")
    if cached is not None:
        return cached
    found = console.signer.loads(request.cookies.get(COOKIE))
    if found is not None:
        request.scope["gateway.console_session"] = found
    return found


def _session_or_new(request: Request, console: Console) -> Session:
    found = _session(request, console)
    if found is None:
        found = console.signer.new(None)
        request.scope["gateway.console_session"] = found
        request.scope["gateway.console_new_cookie"] = True
    return found


def set_session(request: Request, session: Session) -> None:
    """Make ``session`` the request's session (its cookie goes out with the response)."""
    request.scope["gateway.console_session"] = session
    request.scope["gateway.console_new_cookie"] = True


def _write_cookie(request: Request, response: Response, console: Console) -> None:
    if not request.scope.get("gateway.console_new_cookie"):
        return
    session: Session = request.scope["gateway.console_session"]
    secure = console.secure if console.secure is not None else request.url.scheme == "https"
    response.set_cookie(COOKIE, console.signer.dumps(session), max_age=max(int(session.expires - time.time()), 0),
                        path=PREFIX, httponly=True, samesite="strict", secure=secure)


async def still_admin(ctx: AppContext, session: Session) -> bool:
    """Whether the token the session logged in with still authenticates its client as an admin
    (not rotated, revoked, expired or narrowed)."""
    if session.subject is None or session.credential is None:
        return False
    found = await ctx.read(ctx.auth.principal_of_digest, session.credential, session.access_token)
    expected = ADMIN_TOKEN_NAME if session.subject == ADMIN_TOKEN_SUBJECT else session.subject
    return found is not None and found.name == expected and found.has("admin")


async def login(request: Request) -> Session:
    """The logged-in admin's session, else ``LoginRequired``; the audit record names the client."""
    console = console_of(request)
    session = _session(request, console)
    if session is None or session.subject is None or not await still_admin(ctx_of(request), session):
        raise LoginRequired()
    record = note_of(request)
    if record is not None:
        record.client = display_name(session.subject)
    return session


def display_name(subject: str) -> str:
    """How the console and the audit trail name a session's client."""
    return "admin-token" if subject == ADMIN_TOKEN_SUBJECT else subject


async def checked_form(request: Request, console: Console) -> FormData:
    """The POSTed form, once its CSRF token (field ``csrf`` or header ``X-CSRF-Token``) matches the session's."""
    form = await request.form()
    session = _session(request, console)
    token = form.get("csrf") or request.headers.get("x-csrf-token")
    if session is None or not console.signer.check_csrf(session, token if isinstance(token, str) else None):
        raise ConsoleError(403, "This form has expired or did not come from the console. Reload the page and try"
                                " again.")
    return form


_NOTICES = {
    "paused": "Delivery paused; changes keep queueing.",
    "resumed": "Delivery resumed.",
    "replayed": "Sent again: the dead letter is back in the queue.",
    "discarded": "Discarded.",
    "revoked": "Client revoked: its token no longer works.",
    "identity-accept": "Linked: one person, one golden record (recorded by a Provenance).",
    "identity-reject": "Kept apart: two people (recorded by a Provenance).",
    "replay-stored": "Replayed: the record is stored now.",
    "replay-held": "Replayed, but the record failed again; it stays held (see the problems below).",
}


def notice_text(code: object) -> str | None:
    """The message a ``notice`` code in a redirect stands for (codes only: no text from the URL is shown)."""
    if not isinstance(code, str):
        return None
    count = code[9:]
    if code.startswith("replayed-") and count.isascii() and count.isdigit() and len(count) < 19:
        return f"Sent {int(count)} dead letter(s) again."
    return _NOTICES.get(code)


def page(request: Request, template: str, http_status: int = 200, **values: Any) -> HTMLResponse:
    """Render a console page (or an htmx fragment) with the session's CSRF token and the nav."""
    console = console_of(request)
    session = _session_or_new(request, console)
    values["notice"] = notice_text(values.get("notice"))
    html = console.env.get_template(template).render(
        request=request,
        prefix=PREFIX,
        csrf=console.signer.csrf_token(session),
        user=display_name(session.subject) if session.subject else None,
        identity=ctx_of(request).services.identity is not None,  # its page in the nav only when it is on
        **values,
    )
    response = HTMLResponse(html, status_code=http_status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
    )
    _write_cookie(request, response, console)
    return response


def redirect(request: Request, url: str) -> Response:
    """A 303 to ``url`` (for htmx, ``HX-Redirect``), carrying a new session cookie if one was made."""
    response: Response
    if request.headers.get("hx-request") and not request.headers.get("hx-boosted"):
        response = Response(status_code=204, headers={"HX-Redirect": url})
    else:
        response = RedirectResponse(url, status_code=303)
    _write_cookie(request, response, console_of(request))
    return response


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """An error as a console page (a 404 is a page, not an OperationOutcome)."""
    titles = {400: "Bad request", 403: "Not allowed", 404: "Not found", 405: "Not allowed", 409: "Conflict",
              422: "Refused", 503: "Unavailable"}
    # htmx swaps an error answer in (base.html's htmx-config): a boosted link or form replaces the
    # page, so it gets one; a request for a fragment (a live table, a result) gets the error alone.
    template = "error_fragment.html" if _fragment_request(request) else "error.html"
    return page(request, template, http_status=status, title=titles.get(status, "Error"), message=message)


def _fragment_request(request: Request) -> bool:
    return bool(request.headers.get("hx-request")) and not request.headers.get("hx-boosted")
