"""Creating API clients, shared by ``gateway clients create`` and the operator console.

    token = create_client(store, "openmrs", ["system/*.r"], expires=None)   # shown once, never stored
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.auth.scopes import validate_scopes
from gateway.auth.tokens import hash_token, new_token
from gateway.errors import RequestError

if TYPE_CHECKING:
    from gateway.store import ClientRegistry

__all__ = ["ClientNameError", "check_client_name", "create_client"]


class ClientNameError(RequestError):
    """A client name that is not letters, digits, - and _ (64 at most)."""


#: The principal name of the configured ``admin_token`` (it has no client row). A client of that
#: name would share its export jobs, subscriptions, rate limit and audit trail.
ADMIN_TOKEN_NAME = "admin-token"


def check_client_name(name: str) -> None:
    """Raise ``ClientNameError`` unless ``name`` is letters, digits, - and _ (64 at most), and not the
    name the configured admin token goes by."""
    if not name or not name.replace("-", "").replace("_", "").isalnum() or not name.isascii() or len(name) > 64:
        raise ClientNameError(f"invalid client name {name!r}: use letters, digits, - and _ (64 at most)")
    if name == ADMIN_TOKEN_NAME:
        raise ClientNameError(f"invalid client name {name!r}: it is the name of the configured admin token")


def create_client(
    store: ClientRegistry,
    name: str,
    scopes: Sequence[str],
    expires: datetime | None = None,
    jwks: dict[str, Any] | None = None,
) -> str:
    """Create (or re-key) client ``name``; return its new token (only its hash is stored).

    Raises ``ClientNameError`` or ``ScopeError`` naming the problem.
    """
    from gateway.store import ApiClient

    check_client_name(name)
    validate_scopes(list(scopes))
    token = new_token()
    store.save_client(ApiClient(name, tuple(scopes), datetime.now(UTC), expires=expires, jwks=jwks), hash_token(token))
    return token
