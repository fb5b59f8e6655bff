"""Whatever a client signs or sends, the token endpoint answers with a token or an OAuth error, never a crash.

Claims and headers are generated (any JSON: NaN, huge numbers, lists where strings belong …)
and signed with the client's real key, so they get past the signature to the claim checks.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.auth import KeySets, OAuthError, TokenIssuer
from gateway.store import ApiClient, Store, open_store
from tests.support.smart import ec_key, public_jwks, rsa_key, sign, token_form

TOKEN_URL = "https://gateway.example.org/auth/token"
NOW = 1_800_000_000.0

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["emr", TOKEN_URL, NOW + 60, int(NOW + 60), "RS384", "ES384", "rsa-1", "ec-1"]),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=5), inner, max_size=3), max_leaves=8)
claim_names = st.sampled_from(["iss", "sub", "aud", "exp", "jti", "nbf", "iat"])


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory() as directory:
        opened = open_store(f"sqlite:///{directory}/fuzz.db")
        opened.save_client(ApiClient("emr", ("system/*.cruds",), datetime.now(UTC),
                                     jwks=public_jwks(rsa_key(), ec_key())), "hash-emr")
        yield opened
        opened.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    changes=st.dictionaries(claim_names, json_values, max_size=4),
    header=st.one_of(st.just({}), st.dictionaries(st.sampled_from(["kid", "jku", "typ"]), st.text(max_size=30),
                                                  max_size=2)),
    use_ec=st.booleans(),
    scope=st.one_of(st.just("system/Patient.rs"), st.just("system/*.rs admin"), st.text(max_size=40)),
)
def test_any_signed_claims_get_a_token_or_an_oauth_error(
    store: Store, changes: dict[str, Any], header: dict[str, Any], use_ec: bool, scope: str,
) -> None:
    values: dict[str, Any] = {"iss": "emr", "sub": "emr", "aud": TOKEN_URL, "exp": int(NOW + 60),
                              "jti": uuid.uuid4().hex, **changes}
    key = ec_key() if use_ec else rsa_key()
    try:
        signed = sign(values, key, "ES384" if use_ec else "RS384", **{k: v for k, v in header.items() if v is not None})
    except Exception:  # joserfc refuses some headers (e.g. a non-string kid); nothing to send then
        event("not signed")
        return
    issuer = TokenIssuer(store, KeySets(now=lambda: NOW), now=lambda: NOW)
    try:
        issued = issuer.issue(token_form(signed, scope=scope), TOKEN_URL)
    except OAuthError as exc:
        assert exc.status in (400, 401) and signed not in exc.diagnostics
        event(f"refused: {exc.error}")
        return
    event("issued")
    assert issued.access_token.startswith("gwa_") and issued.scope
