"""Bearer tokens to principals: the admin token, or a registered client looked up by token hash."""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING

from gateway.auth.scopes import Principal
from gateway.auth.tokens import hash_token
from gateway.errors import FhirError

if TYPE_CHECKING:
    from gateway.store import ClientRegistry

__all__ = ["Authenticator"]

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
