"""Bearer tokens to principals: the admin token, a registered client's own token, or an access token
the SMART token endpoint issued (``gateway.auth.issuer``), each looked up by hash."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.auth.clients import ADMIN_TOKEN_NAME
from gateway.auth.scopes import Principal, grant_scopes
from gateway.auth.tokens import ACCESS_TOKEN_PREFIX, hash_token
from gateway.errors import FhirError
from gateway.search import DataPolicy, PolicyError

if TYPE_CHECKING:
    from gateway.store import ApiClient, ClientRegistry

__all__ = ["Authenticator"]

log = logging.getLogger(__name__)

# A revoked, expired or re-keyed token is refused by every process within this bound: no
# process serves a lookup older than this. It still spares the database all but one lookup a
# second per token under load.
_CACHE_SECONDS = 1.0
# Last use is a write on the read path, so it is recorded at most this often per client per process.
_TOUCH_SECONDS = 60.0
# Sees no Patient: no resource has an empty id.
_NOTHING = DataPolicy(patients=("",))
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="chw-gateway"'}


class Authenticator:
    """Resolves ``Authorization: Bearer`` tokens to principals, with a 1 s cache.

    An access token's principal holds the scopes granted to it, not all of its client's.
    """

    def __init__(self, store: ClientRegistry, admin_token: str | None = None,
                 now: Callable[[], float] = time.time, policies: Mapping[str, DataPolicy] | None = None) -> None:
        self.store = store
        # Policies from the configuration file win over those set with `gateway clients set-policy`.
        self._policies = dict(policies or {})
        self._admin_hash = hash_token(admin_token) if admin_token else None
        self._now = now
        # digest -> (cached until, principal or None, expires epoch or None)
        self._cache: dict[str, tuple[float, Principal | None, float | None]] = {}
        self._touched: dict[str, float] = {}
        # Last-use times waiting to be written (client -> when): the request path only notes them;
        # ``flush`` writes them, from the app's background task or at shutdown.
        self._pending: dict[str, datetime] = {}

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
            return Principal.of(ADMIN_TOKEN_NAME, ("system/*.cruds", "admin", "ingest:*"))
        now = self._now()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            found, expires = cached[1], cached[2]
        else:
            found, expires = self._lookup(digest, token.startswith(ACCESS_TOKEN_PREFIX), now)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + _CACHE_SECONDS, found, expires)
        if found is None or (expires is not None and expires <= now):
            raise FhirError("the token is not valid", status=401, code="login", headers=_CHALLENGE)
        self._touch(found.name, now)
        return found

    def _principal(self, client: ApiClient, scopes: tuple[str, ...] | None = None) -> Principal:
        policy = self._policies.get(client.name)
        if policy is None and client.policy is not None:
            try:
                policy = DataPolicy.from_json(client.policy)
            except PolicyError:
                # Fail closed: a policy nobody can read must not become "no policy".
                log.warning("the stored data policy of a client cannot be read; its requests are refused")
                policy = _NOTHING
        return Principal.of(client.name, client.scopes if scopes is None else scopes, policy)

    def principal_of_digest(self, digest: str, access_token: bool) -> Principal | None:
        """The principal a token known only by its hash authenticates now (a console session's
        login token), or None: rotated, revoked, expired or narrowed tokens end what they opened."""
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            return Principal.of(ADMIN_TOKEN_NAME, ("system/*.cruds", "admin", "ingest:*"))
        now = self._now()
        found, expires = self._lookup(digest, access_token, now)
        return None if found is None or (expires is not None and expires <= now) else found

    def _lookup(self, digest: str, access_token: bool, now: float) -> tuple[Principal | None, float | None]:
        """The principal of a token (None if refused) and when it stops being valid (None: no expiry)."""
        if access_token:
            access = self.store.access_token_by_hash(digest)
            if access is None or not access.client.active(datetime.fromtimestamp(now, UTC)):
                return None, None
            if access.client.name == ADMIN_TOKEN_NAME:
                return None, None  # as for its own token, below
            owner = access.client
            # What was granted, as far as the client's registration still allows it (it may have
            # been narrowed since the token was issued).
            found = self._principal(owner, grant_scopes(access.scopes, owner.scopes))
            ends = [access.expires.timestamp()] + ([owner.expires.timestamp()] if owner.expires else [])
            return (found if found.scopes else None), min(ends)
        client = self.store.client_by_token_hash(digest)
        if client is None or not client.active(datetime.fromtimestamp(now, UTC)):
            return None, None
        if client.name == ADMIN_TOKEN_NAME:
            # Registered before the name was reserved: it would pass for the configured admin token
            # (its subscriptions, export jobs and audit trail). Fail closed; recreate it under another name.
            log.warning("a client named %s is refused: the name is the configured admin token's", ADMIN_TOKEN_NAME)
            return None, None
        return self._principal(client), client.expires.timestamp() if client.expires else None

    def _touch(self, name: str, now: float) -> None:
        if now - self._touched.get(name, float("-inf")) < _TOUCH_SECONDS:
            return
        if len(self._touched) > 10_000:
            self._touched.clear()
        self._touched[name] = now
        # A write, even once a minute, must not hold up the event loop the lookup runs on.
        self._pending[name] = datetime.fromtimestamp(now, UTC)

    def flush(self) -> None:
        """Write the last-use times noted so far (blocking: run it off the event loop)."""
        while self._pending:
            name = next(iter(self._pending))
            when = self._pending.pop(name)
            try:
                self.store.touch_client(name, when)
            except Exception as exc:  # bookkeeping: a busy or read-only database must not refuse requests
                log.warning("could not record last use of a client (%s)", type(exc).__name__)

    def forget(self) -> None:
        """Drop cached lookups (after clients change)."""
        self._cache.clear()
