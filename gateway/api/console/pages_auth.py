"""Console login and logout: an admin client's token (or the bootstrap admin token) opens a session."""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.context import ctx_of
from gateway.api.login_throttle import retry_after_seconds
from gateway.auth import ACCESS_TOKEN_PREFIX, hash_token
from gateway.errors import FhirError

from .web import ADMIN_TOKEN_SUBJECT, PREFIX, checked_form, console_of, page, redirect, set_session


def _next(value: object) -> str:
    # Only a console path: an open redirect would send a logged-in operator anywhere.
    text = value if isinstance(value, str) else ""
    if text.startswith(PREFIX) and not text.startswith("//") and "\\" not in text and "//" not in text:
        return text
    return PREFIX


async def login_form(request: Request) -> Response:
    """The login page."""
    return page(request, "login.html", next=_next(request.query_params.get("next")), error=None)


async def login_submit(request: Request) -> Response:
    """Check the token: it must authenticate and carry the ``admin`` scope."""
    console = console_of(request)
    form = await checked_form(request, console)
    target = _next(form.get("next"))
    token = form.get("token")
    token = token.strip() if isinstance(token, str) else ""
    ctx = ctx_of(request)
    throttle = ctx.throttle
    limits = throttle.keys(request) if throttle is not None else {}
    if throttle is not None:
        wait = await throttle.wait(limits)
        if wait > 0:
            seconds = retry_after_seconds(wait)
            response = page(request, "login.html", http_status=429, next=target,
                            error=f"Too many failed logins from this address; try again in {_span(seconds)}.")
            response.headers["Retry-After"] = str(seconds)
            return response
    try:
        principal = ctx.auth.principal(f"Bearer {token}") if token else None
    except FhirError:
        principal = None
    if principal is None:
        if throttle is not None:
            await throttle.failed(limits)
        return page(request, "login.html", http_status=401, next=target, error="That token is not valid.")
    if not principal.has("admin"):
        return page(request, "login.html", http_status=403, next=target,
                    error="That client does not have the admin scope; the console is for admin clients.")
    admin = ctx.settings.admin_token
    is_bootstrap = admin is not None and hash_token(token) == hash_token(admin.get_secret_value())
    subject = ADMIN_TOKEN_SUBJECT if is_bootstrap else principal.name
    # A new nonce: the anonymous session's ends here. The session remembers the token's hash, so it
    # ends when that token stops working (rotated, revoked, expired) or loses the admin scope.
    session = console.signer.new(subject, credential=hash_token(token),
                                 access_token=token.startswith(ACCESS_TOKEN_PREFIX))
    set_session(request, session)
    return redirect(request, target)


def _span(seconds: int) -> str:
    return f"{seconds} seconds" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"


async def logout(request: Request) -> Response:
    """End the session (the cookie is replaced by an anonymous one)."""
    console = console_of(request)
    await checked_form(request, console)
    set_session(request, console.signer.new(None))
    return redirect(request, f"{PREFIX}/login")
