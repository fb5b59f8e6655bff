"""The client side of SMART Backend Services for tests: keys and signed assertions, made with joserfc.

joserfc is independent of pyjwt (which the gateway verifies with), so a test passing is not
one library agreeing with itself.
"""

from __future__ import annotations

import base64
import json
import uuid
from functools import cache
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@cache
def rsa_key(kid: str = "rsa-1") -> RSAKey:
    """An RSA 2048 key pair (generated once per kid and test run: generation is slow)."""
    return RSAKey.generate_key(2048, parameters={"kid": kid})


@cache
def ec_key(kid: str = "ec-1") -> ECKey:
    """An EC P-384 key pair."""
    return ECKey.generate_key("P-384", parameters={"kid": kid})


def public_jwks(*keys: RSAKey | ECKey) -> dict[str, Any]:
    """The public JWK Set a client registers."""
    return {"keys": [key.as_dict(private=False) for key in keys]}


def claims(client_id: str, audience: str, now: float, *, exp_in: float = 120, **overrides: Any) -> dict[str, Any]:
    """The claims of a valid assertion at ``now``; ``overrides`` replace (None removes) claims."""
    values: dict[str, Any] = {"iss": client_id, "sub": client_id, "aud": audience, "exp": int(now + exp_in),
                              "jti": uuid.uuid4().hex}
    for name, value in overrides.items():
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    return values


def sign(values: dict[str, Any], key: RSAKey | ECKey | OctKey, alg: str, **header: Any) -> str:
    """A JWS over ``values`` signed with ``key``; the header names the key's kid unless ``header`` says otherwise."""
    head: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    kid = key.kid if not isinstance(key, OctKey) else "oct-1"
    head["kid"] = kid
    head.update(header)
    head = {name: value for name, value in head.items() if value is not None}
    return jwt.encode(head, values, key, algorithms=[alg])


def assertion(client_id: str, audience: str, now: float, key: RSAKey | ECKey | None = None,
              **overrides: Any) -> str:
    """A valid assertion of ``client_id`` for ``audience`` (RS384 with ``rsa_key()`` unless ``key`` is EC)."""
    key = key or rsa_key()
    return sign(claims(client_id, audience, now, **overrides), key, "ES384" if isinstance(key, ECKey) else "RS384")


def unsigned(values: dict[str, Any], kid: str = "rsa-1") -> str:
    """An ``alg: none`` JWT (no library signs those on request)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{part(values)}."


def token_form(client_assertion: str, scope: str = "system/Patient.rs", **extra: str) -> dict[str, str]:
    """A client-credentials token request's form fields."""
    return {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion, "scope": scope, **extra}
