"""Console pages over API clients: list, create (the token is shown once), revoke.

Creation goes through ``gateway.auth.create_client``, as ``gateway clients create`` does;
revocation through the store's ``revoke_client``, as ``gateway clients revoke`` does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.context import ctx_of
from gateway.auth import ClientNameError, ScopeError, create_client

from .web import PREFIX, ConsoleError, checked_form, console_of, login, page, redirect

_MAX_DAYS = 3650


async def _listing(request: Request, **values: Any) -> Response:
    ctx = ctx_of(request)
    clients = await ctx.query(ctx.store.list_clients)
    now = datetime.now(UTC)
    rows = [{"client": client, "active": client.active(now)} for client in clients]
    return page(request, "clients.html", rows=rows, **values)


async def clients(request: Request) -> Response:
    """Every registered client: scopes, created, expiry, state, last use (never a token)."""
    await login(request)
    return await _listing(request, created=None, error=None, form={},
                          notice=request.query_params.get("notice"))


async def create(request: Request) -> Response:
    """Create (or re-key) a client; the page shows its token once."""
    await login(request)
    form = await checked_form(request, console_of(request))
    name = str(form.get("name") or "").strip()
    scopes = str(form.get("scopes") or "").split()
    days_text = str(form.get("expires_days") or "").strip()
    shown = {"name": name[:64], "scopes": " ".join(scopes)[:500], "expires_days": days_text[:5]}
    expires = None
    if days_text:
        if not (days_text.isascii() and days_text.isdigit()) or not 0 < int(days_text) <= _MAX_DAYS:
            return await _listing(request, created=None, form=shown,
                                  error=f"Expires in: a number of days from 1 to {_MAX_DAYS}, or empty for never.")
        expires = datetime.now(UTC) + timedelta(days=int(days_text))
    ctx = ctx_of(request)
    try:
        token = await ctx.write(create_client, ctx.store, name, scopes, expires)
    except (ClientNameError, ScopeError) as exc:
        return await _listing(request, created=None, form=shown, error=str(exc))
    ctx.auth.forget()  # a re-keyed client's old token stops now in this process
    return await _listing(request, created={"name": name, "token": token}, form={}, error=None)


async def revoke(request: Request) -> Response:
    """Revoke a client: its token (and the console sessions it opened) stop working."""
    await login(request)
    await checked_form(request, console_of(request))
    ctx = ctx_of(request)
    name = request.path_params["name"]
    if not await ctx.write(ctx.store.revoke_client, name):
        raise ConsoleError(404, f"There is no client named {name!r}.")
    ctx.auth.forget()
    return redirect(request, f"{PREFIX}/clients?notice=revoked")
