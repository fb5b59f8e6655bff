"""Bearer tokens: random, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "gw_"
#: Access tokens the SMART token endpoint issues start with this, so the authenticator knows
#: which table holds them.
ACCESS_TOKEN_PREFIX = "gwa_"


def new_token() -> str:
    """A new random bearer token (256 bits of entropy)."""
    return PREFIX + secrets.token_urlsafe(32)


def new_access_token() -> str:
    """A new random access token (256 bits of entropy)."""
    return ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of a token.

    A plain SHA-256 is right here (unlike for passwords): tokens are long random
    strings, so there is nothing to brute-force, and the check runs on every request.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
