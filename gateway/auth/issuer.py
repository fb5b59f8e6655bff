"""The token endpoint's work: a client-credentials request with a signed assertion in, an access token out.

Access tokens are opaque random strings, stored only as a hash with the client's name, the
granted scopes and the expiry (``ClientRegistry.save_access_token``); the ``Authenticator``
joins them to the client on every lookup, so revoking the client ends them within its 1 s
cache bound in every process. Assertion ids are recorded in the store until the assertion
expires (``remember_jti``), so a replay is refused by every process over the same store.

The work is synchronous (store calls, and perhaps one fetch of the client's key set): the
API runs it on a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.auth.assertions import (
    ASSERTION_TYPE,
    OAuthError,
    UnknownKey,
    invalid_client,
    read_assertion,
    verify_assertion,
)
from gateway.auth.clients import ClientNameError, check_client_name
from gateway.auth.jwks import KeySetError, KeySets
from gateway.auth.scopes import grant_scopes
from gateway.auth.tokens import hash_token, new_access_token

if TYPE_CHECKING:
    from gateway.store import ClientRegistry

__all__ = ["IssuedToken", "TokenIssuer", "claimed_client"]

_MAX_SCOPES = 100


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """An access token response (RFC 6749 §5.1)."""

    access_token: str
    expires_in: int
    scope: str

    @property
    def body(self) -> dict[str, str | int]:
        """The JSON response."""
        return {"access_token": self.access_token, "token_type": "bearer", "expires_in": self.expires_in,
                "scope": self.scope}


def claimed_client(form: Mapping[str, str]) -> str | None:
    """The client a token request names (``client_id``, else its assertion's unverified ``iss``), if valid as a name."""
    name = form.get("client_id")
    if name is None:
        try:
            name = read_assertion(form.get("client_assertion", "")).client_id
        except OAuthError:
            return None
    try:
        check_client_name(name)
    except ClientNameError:
        return None
    return name


class TokenIssuer:
    """Issues short-lived access tokens to clients that prove who they are with a signed assertion."""

    def __init__(self, store: ClientRegistry, key_sets: KeySets | None = None, *, lifetime: int = 300,
                 now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.key_sets = key_sets or KeySets()
        self.lifetime = lifetime
        self._now = now

    def issue(self, form: Mapping[str, str], token_url: str) -> IssuedToken:
        """Answer a token request (its form fields); ``OAuthError`` says why one is refused."""
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            raise OAuthError("unsupported_grant_type", "only grant_type=client_credentials is supported")
        if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
            raise invalid_client(f"authenticate with client_assertion_type={ASSERTION_TYPE} and a client_assertion")
        requested = form.get("scope", "").split()
        if not requested:
            raise OAuthError("invalid_request", "scope is required (space-separated, e.g. system/Patient.rs)")
        if len(requested) > _MAX_SCOPES:
            raise OAuthError("invalid_scope", f"at most {_MAX_SCOPES} scopes may be requested")
        token = form["client_assertion"]
        assertion = read_assertion(token)
        if "client_id" in form and form["client_id"] != assertion.client_id:
            raise invalid_client("client_id differs from the assertion's iss")
        now = self._now()
        try:
            # Only a name a client can have is looked up (a NUL, which PostgreSQL's text cannot
            # hold, made an anonymous request a 500).
            check_client_name(assertion.client_id)
        except ClientNameError:
            raise invalid_client("the client is unknown, not active, or has no registered keys") from None
        client = self.store.client_by_name(assertion.client_id)
        if client is None or not client.active(datetime.fromtimestamp(now, UTC)) or not client.jwks:
            raise invalid_client("the client is unknown, not active, or has no registered keys")
        registered_uri = client.jwks.get("jwks_uri")
        if assertion.jku is not None and assertion.jku != registered_uri:
            raise invalid_client("the assertion's jku is not the client's registered key set URL")
        try:
            keys = self.key_sets.keys(client.jwks)
            try:
                verified = verify_assertion(token, assertion, keys, token_url, now)
            except UnknownKey:
                if registered_uri is None:
                    raise
                keys = self.key_sets.keys(client.jwks, refresh=True)
                verified = verify_assertion(token, assertion, keys, token_url, now)
        except KeySetError as exc:
            raise invalid_client(exc.diagnostics) from None
        granted = grant_scopes(requested, client.scopes)
        if not granted:
            raise OAuthError("invalid_scope", "the client is not registered for any of the requested scopes")
        if not self.store.remember_jti(client.name, verified.jti, datetime.fromtimestamp(verified.expires, UTC)):
            raise invalid_client("the assertion's jti was used before: sign a new assertion for each request")
        lifetime = float(self.lifetime)
        if client.expires is not None:
            lifetime = min(lifetime, client.expires.timestamp() - now)
        access_token = new_access_token()
        self.store.save_access_token(hash_token(access_token), client.name, granted,
                                     datetime.fromtimestamp(now + lifetime, UTC))
        return IssuedToken(access_token, max(1, int(lifetime)), " ".join(granted))
