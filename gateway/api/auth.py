"""Bearer-token authentication and scope checks for every protected endpoint."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

from starlette.requests import Request

from gateway.auth.scopes import Principal
from gateway.auth.tokens import hash_token
from gateway.errors import FhirError
from gateway.store import ClientRegistry

_CACHE_SECONDS = 30.0
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="chw-gateway"'}


class Authenticator:
    """Resolves ``Authorization: Bearer`` tokens to principals, with a short cache."""

    def __init__(self, store: ClientRegistry, admin_token: str | None = None) -> None:
        self.store = store
        self._admin_hash = hash_token(admin_token) if admin_token else None
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def principal(self, authorization: str | None) -> Principal:
        """The principal a header authenticates, or a 401 ``FhirError``."""
        if not authorization:
            raise FhirError("authentication required: send Authorization: Bearer <token>", status=401,
                            code="login", headers=_CHALLENGE)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise FhirError("use a Bearer token", status=401, code="login", headers=_CHALLENGE)
        digest = hash_token(token)
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            return Principal.of("admin-token", ("system/*.cruds", "admin", "ingest:*"))
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            found = cached[1]
        else:
            client = self.store.client_by_token_hash(digest)
            found = None if client is None or client.disabled else Principal.of(client.name, client.scopes)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + _CACHE_SECONDS, found)
        if found is None:
            raise FhirError("the token is not valid", status=401, code="login", headers=_CHALLENGE)
        return found

    def forget(self) -> None:
        """Drop cached lookups (after clients change)."""
        self._cache.clear()


def authenticate(request: Request) -> Principal:
    """The request's principal (401 when missing or invalid)."""
    auth: Authenticator = request.app.state.ctx.auth
    return auth.principal(request.headers.get("authorization"))


def require_fhir(request: Request, rtype: str, letter: str) -> Principal:
    """Authenticate and check a SMART permission letter on a resource type (403 if not allowed)."""
    principal = authenticate(request)
    if not principal.can(rtype, letter):
        raise FhirError(
            f"the client's scopes do not allow {_VERB[letter]} on {rtype} (needs system/{rtype}.{letter})",
            status=403,
            code="forbidden",
        )
    return principal


_VERB = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def require_scope(scope: str) -> Callable[[Request], Principal]:
    """A FastAPI dependency requiring a non-FHIR scope; ``{name}`` is filled from path parameters."""

    def dependency(request: Request) -> Principal:
        principal = authenticate(request)
        needed = scope.format(**request.path_params) if "{" in scope else scope
        if not principal.has(needed):
            raise FhirError(f"this needs the {needed!r} scope", status=403, code="forbidden")
        return principal

    return dependency
