"""What one request carries between the middlewares and the handlers, in the ASGI scope's ``state``.

The access log (outermost) sets the request id; whoever authenticates the request first (the
rate limiter, else the handler) records the principal, so the token is looked up once and the
access log can name the client.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

from gateway.auth import Principal

_PRINCIPAL = "gateway.principal"
_REQUEST_ID = "gateway.request_id"


def _state(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


def principal_of(scope: Scope) -> Principal | None:
    """The principal this request authenticated as, if it has been authenticated yet."""
    principal: Principal | None = scope.get("state", {}).get(_PRINCIPAL)
    return principal


def remember_principal(scope: Scope, principal: Principal) -> None:
    """Record the request's principal (for the handlers and the access log)."""
    _state(scope)[_PRINCIPAL] = principal


def request_id_of(scope: Scope) -> str | None:
    """The request's id (``X-Request-ID``), once the access log middleware has given it one."""
    request_id: str | None = scope.get("state", {}).get(_REQUEST_ID)
    return request_id


def set_request_id(scope: Scope, request_id: str) -> None:
    """Give the request its id."""
    _state(scope)[_REQUEST_ID] = request_id
