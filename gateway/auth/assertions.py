"""Verify a SMART client assertion (client-confidential-asymmetric): a JWT the client signed with its private key.

The rules (SMART App Launch 2, "Client Authentication: Asymmetric"): ``alg`` RS384 or
ES384 only; the ``kid`` header names the key in the client's registered JWK Set;
``iss`` and ``sub`` are the client id; ``aud`` is this server's token endpoint URL;
``exp`` is present, not passed, and at most five minutes ahead; ``jti`` is present (the
caller makes sure it is never seen twice). Time is the caller's clock, so tests can move it.
Every failure is an ``OAuthError`` whose description never repeats the assertion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from gateway.auth.jwks import ALGORITHMS, key_fits
from gateway.errors import RequestError

__all__ = [
    "ASSERTION_TYPE", "MAX_ASSERTION_SECONDS", "SKEW_SECONDS", "Assertion", "OAuthError", "UnknownKey",
    "read_assertion", "verify_assertion",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: SMART: an assertion's ``exp`` is no more than five minutes in the future.
MAX_ASSERTION_SECONDS = 300
#: Clock difference tolerated between the client and the gateway.
SKEW_SECONDS = 30
_MAX_JTI = 255


class OAuthError(RequestError):
    """A token request the token endpoint refuses, with its RFC 6749 §5.2 ``error`` code."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description, status=status, code="security")
        self.error = error

    @property
    def body(self) -> dict[str, str]:
        """The JSON error response."""
        return {"error": self.error, "error_description": self.diagnostics}


def invalid_client(description: str) -> OAuthError:
    """The client could not be authenticated (401, as RFC 6749 allows for ``invalid_client``)."""
    return OAuthError("invalid_client", description, status=401)


class UnknownKey(OAuthError):
    """The assertion's ``kid`` names no usable key of the set (the client may have rotated its keys)."""

    def __init__(self) -> None:
        super().__init__("invalid_client", "the assertion's kid names no RS384/ES384 key of the client's key set",
                         status=401)


@dataclass(frozen=True, slots=True)
class Assertion:
    """What an assertion says about itself before its signature is checked."""

    client_id: str
    alg: str
    kid: str
    jku: str | None


@dataclass(frozen=True, slots=True)
class VerifiedAssertion:
    """A verified assertion: whose it is, its id, and until when it is valid (epoch seconds)."""

    client_id: str
    jti: str
    expires: float


def read_assertion(token: str) -> Assertion:
    """The header and issuer of an assertion, unverified; the gateway needs them to find the key."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise invalid_client("client_assertion is not a signed JWT") from None
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise invalid_client(f"the assertion's alg must be one of {', '.join(ALGORITHMS)}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise invalid_client("the assertion's header needs a kid naming the client's key")
    jku = header.get("jku")
    if jku is not None and not isinstance(jku, str):
        raise invalid_client("the assertion's jku header must be a URL")
    iss = claims.get("iss")
    if not isinstance(iss, str) or not iss:
        raise invalid_client("the assertion needs iss: the client id")
    return Assertion(iss, alg, kid, jku)


def verify_assertion(
    token: str, assertion: Assertion, keys: Sequence[Mapping[str, Any]], audience: str, now: float,
) -> VerifiedAssertion:
    """Check signature and claims of ``token`` against the client's ``keys`` at ``now`` (epoch seconds)."""
    candidates = [key for key in keys if key.get("kid") == assertion.kid and key_fits(key, assertion.alg)]
    if not candidates:
        raise UnknownKey()
    claims: dict[str, Any] | None = None
    for key in candidates:
        try:
            claims = jwt.decode(
                token,
                jwt.PyJWK(dict(key), assertion.alg),
                algorithms=[assertion.alg],
                audience=audience,
                issuer=assertion.client_id,
                # Times are checked below on the caller's clock.
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "require": ["iss", "sub", "aud", "exp", "jti"]},
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidAudienceError:
            raise invalid_client(f"the assertion's aud must be this server's token endpoint, {audience}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise invalid_client(f"the assertion needs the {exc.claim} claim") from None
        except jwt.PyJWTError as exc:
            raise invalid_client(f"the assertion is not valid ({type(exc).__name__})") from None
    if claims is None:
        raise invalid_client("the assertion's signature does not verify with the client's key")
    if claims.get("sub") != assertion.client_id:
        raise invalid_client("the assertion's sub must equal its iss (the client id)")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or not math.isfinite(exp):
        raise invalid_client("the assertion's exp must be a number")
    if exp <= now - SKEW_SECONDS:
        raise invalid_client("the assertion has expired")
    if exp > now + MAX_ASSERTION_SECONDS + SKEW_SECONDS:
        raise invalid_client(f"the assertion's exp is more than {MAX_ASSERTION_SECONDS} seconds ahead")
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is not None and (not isinstance(value, int | float) or not value <= now + SKEW_SECONDS):
            raise invalid_client(f"the assertion's {name} is in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > _MAX_JTI or not jti.isprintable():
        raise invalid_client(f"the assertion needs a jti of 1 to {_MAX_JTI} printable characters")
    return VerifiedAssertion(assertion.client_id, jti, float(exp) + SKEW_SECONDS)
