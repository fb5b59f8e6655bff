"""SMART Backend Services on both store backends: assertions in, access tokens out, and those tokens at work.

``TokenIssuer`` and ``Authenticator`` run over the ``store`` fixture (SQLite and PostgreSQL)
with one manual clock; two of each over one store stand for two gateway processes. The
assertions are signed with joserfc, independent of the pyjwt the gateway verifies with.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from joserfc.jwk import OctKey, RSAKey

from gateway.auth import (
    Authenticator,
    KeySetError,
    KeySets,
    OAuthError,
    TokenIssuer,
    check_key_set,
    grant_scopes,
)
from gateway.errors import FhirError
from gateway.store import ApiClient, ClientRegistry
from tests.support.smart import (
    assertion,
    claims,
    ec_key,
    public_jwks,
    rsa_key,
    sign,
    token_form,
    unsigned,
)

TOKEN_URL = "https://gateway.example.org/auth/token"
JWKS_URL = "https://emr.example.org/.well-known/jwks.json"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def register(store: ClientRegistry, clock: Clock, name: str = "emr", scopes: tuple[str, ...] = ("system/Patient.rs",),
             jwks: dict[str, Any] | None = None) -> None:
    jwks = public_jwks(rsa_key(), ec_key()) if jwks is None else jwks
    store.save_client(ApiClient(name, scopes, datetime.fromtimestamp(clock.now - 60, UTC), jwks=jwks),
                      f"hash-{name}")


def issuer(store: ClientRegistry, clock: Clock, key_sets: KeySets | None = None) -> TokenIssuer:
    return TokenIssuer(store, key_sets or KeySets(now=clock), lifetime=300, now=clock)


def refusal(issue: TokenIssuer, form: dict[str, str]) -> OAuthError:
    with pytest.raises(OAuthError) as caught:
        issue.issue(form, TOKEN_URL)
    assert form.get("client_assertion", "") not in caught.value.diagnostics or not form.get("client_assertion")
    return caught.value


def refused(auth: Authenticator, token: str) -> bool:
    try:
        auth.principal(f"Bearer {token}")
    except FhirError as exc:
        assert exc.status == 401
        return True
    return False


@pytest.mark.parametrize("key", [rsa_key, ec_key], ids=["RS384", "ES384"])
def test_a_signed_assertion_gets_a_token_that_carries_the_granted_scopes(
    store: ClientRegistry, clock: Clock, key: Any,
) -> None:
    register(store, clock, scopes=("system/Patient.rs", "system/Observation.cruds", "admin"))
    issued = issuer(store, clock).issue(
        token_form(assertion("emr", TOKEN_URL, clock.now, key()), scope="system/Patient.rs"), TOKEN_URL)
    assert issued.body["token_type"] == "bearer" and issued.expires_in == 300
    assert issued.scope == "system/Patient.rs"
    principal = Authenticator(store, now=clock).principal(f"Bearer {issued.access_token}")
    assert principal.name == "emr" and principal.scopes == ("system/Patient.rs",)
    assert principal.can("Patient", "r") and principal.can("Patient", "s")
    assert not principal.can("Observation", "r") and not principal.has("admin")  # not requested, not granted


def test_an_access_token_expires_after_its_lifetime(store: ClientRegistry, clock: Clock) -> None:
    register(store, clock)
    issued = issuer(store, clock).issue(token_form(assertion("emr", TOKEN_URL, clock.now)), TOKEN_URL)
    auth = Authenticator(store, now=clock)
    assert auth.principal(f"Bearer {issued.access_token}").name == "emr"
    clock.now += 300
    assert refused(auth, issued.access_token)


@pytest.mark.parametrize("make", [
    lambda now: unsigned(claims("emr", TOKEN_URL, now)),
    lambda now: sign(claims("emr", TOKEN_URL, now), OctKey.generate_key(256), "HS256", kid="rsa-1"),
    lambda now: sign(claims("emr", TOKEN_URL, now), rsa_key(), "RS256"),
    lambda now: sign(claims("emr", TOKEN_URL, now), rsa_key(), "RS512"),
    lambda now: sign(claims("emr", TOKEN_URL, now), rsa_key(), "PS384"),
], ids=["none", "HS256", "RS256", "RS512", "PS384"])
def test_algorithms_other_than_rs384_and_es384_are_refused(store: ClientRegistry, clock: Clock, make: Any) -> None:
    register(store, clock)
    error = refusal(issuer(store, clock), token_form(make(clock.now)))
    assert (error.error, error.status) == ("invalid_client", 401)
    assert "alg" in error.diagnostics


def test_a_key_that_is_not_in_the_clients_set_is_refused(store: ClientRegistry, clock: Clock) -> None:
    register(store, clock, jwks=public_jwks(rsa_key()))
    stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"})
    error = refusal(issuer(store, clock), token_form(assertion("emr", TOKEN_URL, clock.now, stranger)))
    assert error.error == "invalid_client" and "kid" in error.diagnostics
    # The same kid as a registered key, but another key: the signature does not verify.
    impostor = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    error = refusal(issuer(store, clock), token_form(assertion("emr", TOKEN_URL, clock.now, impostor)))
    assert error.error == "invalid_client" and "signature" in error.diagnostics
    # An EC key's kid with RS384: no key of that kid fits the algorithm.
    error = refusal(issuer(store, clock), token_form(sign(claims("emr", TOKEN_URL, clock.now), rsa_key(), "RS384",
                                                          kid="ec-1")))
    assert error.error == "invalid_client"


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"exp_in": -31}, "expired"),
    ({"exp_in": 3600}, "seconds ahead"),
    ({"exp": None}, "exp"),
    ({"jti": None}, "jti"),
    ({"aud": "https://elsewhere.example.org/token"}, "aud"),
    ({"sub": "lab"}, "sub"),
    ({"nbf": 1_800_000_100}, "nbf"),
    ({"exp": float("nan")}, "exp"),
    ({"exp": "1800000060"}, "exp"),
    ({"iat": float("nan")}, "iat"),
], ids=["expired", "exp-too-far", "no-exp", "no-jti", "wrong-aud", "iss-not-sub", "not-yet-valid", "exp-nan",
        "exp-string", "iat-nan"])
def test_claims_are_checked(store: ClientRegistry, clock: Clock, overrides: dict[str, Any], expected: str) -> None:
    register(store, clock)
    error = refusal(issuer(store, clock), token_form(assertion("emr", TOKEN_URL, clock.now, **overrides)))
    assert (error.error, error.status) == ("invalid_client", 401)
    assert expected in error.diagnostics


def test_a_little_clock_skew_is_tolerated(store: ClientRegistry, clock: Clock) -> None:
    register(store, clock)
    issue = issuer(store, clock)
    assert issue.issue(token_form(assertion("emr", TOKEN_URL, clock.now, exp_in=-20)), TOKEN_URL).access_token
    assert issue.issue(token_form(assertion("emr", TOKEN_URL, clock.now, exp_in=320)), TOKEN_URL).access_token


def test_a_replayed_assertion_is_refused_by_every_process(store: ClientRegistry, clock: Clock) -> None:
    register(store, clock)
    first, second = issuer(store, clock), issuer(store, clock)
    signed = assertion("emr", TOKEN_URL, clock.now)
    assert first.issue(token_form(signed), TOKEN_URL).access_token
    for process in (first, second):
        error = refusal(process, token_form(signed))
        assert error.error == "invalid_client" and "jti" in error.diagnostics
    # A new assertion (new jti) from the same client is fine.
    assert second.issue(token_form(assertion("emr", TOKEN_URL, clock.now)), TOKEN_URL).access_token


def test_a_refused_scope_does_not_use_up_the_assertion(store: ClientRegistry, clock: Clock) -> None:
    register(store, clock)
    signed = assertion("emr", TOKEN_URL, clock.now)
    assert refusal(issuer(store, clock), token_form(signed, scope="system/Observation.rs")).error == "invalid_scope"
    assert issuer(store, clock).issue(token_form(signed), TOKEN_URL).scope == "system/Patient.rs"


@pytest.mark.parametrize("state", ["unknown", "revoked", "disabled", "expired", "no-keys"])
def test_clients_that_cannot_authenticate_are_refused(store: ClientRegistry, clock: Clock, state: str) -> None:
    created = datetime.fromtimestamp(clock.now - 60, UTC)
    jwks = None if state == "no-keys" else public_jwks(rsa_key())
    expires = created if state == "expired" else None
    if state != "unknown":
        store.save_client(ApiClient("emr", ("system/Patient.rs",), created, disabled=state == "disabled",
                                    expires=expires, jwks=jwks), "hash-emr")
    if state == "revoked":
        store.revoke_client("emr")
    error = refusal(issuer(store, clock), token_form(assertion("emr", TOKEN_URL, clock.now)))
    assert (error.error, error.status) == ("invalid_client", 401)


def test_revoking_the_client_refuses_its_access_tokens_in_every_process_within_a_second(
    store: ClientRegistry, clock: Clock,
) -> None:
    register(store, clock)
    issued = issuer(store, clock).issue(token_form(assertion("emr", TOKEN_URL, clock.now)), TOKEN_URL)
    processes = Authenticator(store, now=clock), Authenticator(store, now=clock)
    assert all(auth.principal(f"Bearer {issued.access_token}").name == "emr" for auth in processes)  # both cache it
    assert store.revoke_client("emr")
    clock.now += 1.0
    assert all(refused(auth, issued.access_token) for auth in processes)
    error = refusal(issuer(store, clock), token_form(assertion("emr", TOKEN_URL, clock.now)))
    assert error.error == "invalid_client"


def test_an_access_token_ends_with_its_clients_expiry(store: ClientRegistry, clock: Clock) -> None:
    created = datetime.fromtimestamp(clock.now - 60, UTC)
    store.save_client(ApiClient("emr", ("system/Patient.rs",), created, expires=created + timedelta(seconds=120),
                                jwks=public_jwks(rsa_key())), "hash-emr")
    issued = issuer(store, clock).issue(token_form(assertion("emr", TOKEN_URL, clock.now)), TOKEN_URL)
    assert issued.expires_in == 60
    auth = Authenticator(store, now=clock)
    assert auth.principal(f"Bearer {issued.access_token}").name == "emr"
    clock.now += 60
    assert refused(auth, issued.access_token)


def test_narrowing_a_clients_scopes_narrows_its_access_tokens(store: ClientRegistry, clock: Clock) -> None:
    register(store, clock, scopes=("system/Patient.rs", "system/Observation.rs"))
    issued = issuer(store, clock).issue(
        token_form(assertion("emr", TOKEN_URL, clock.now), scope="system/Patient.rs system/Observation.rs"), TOKEN_URL)
    client = store.client_by_name("emr")
    assert client is not None
    store.save_client(ApiClient("emr", ("system/Observation.rs",), client.created, jwks=client.jwks), "hash-emr")
    clock.now += 1.0
    principal = Authenticator(store, now=clock).principal(f"Bearer {issued.access_token}")
    assert principal.scopes == ("system/Observation.rs",)


@pytest.mark.parametrize(("requested", "held", "granted"), [
    ("system/Patient.rs", ("system/Patient.rs",), ("system/Patient.rs",)),
    ("system/Patient.rs", ("system/*.cruds",), ("system/Patient.rs",)),
    ("system/Patient.read", ("system/*.cruds",), ("system/Patient.rs",)),  # v1 form accepted
    ("system/Patient.cruds", ("system/Patient.rs",), ("system/Patient.rs",)),  # narrowed
    ("system/*.rs", ("system/Patient.cruds", "system/Observation.r"),
     ("system/Observation.r", "system/Patient.rs")),
    ("system/*.cruds", ("system/*.rs", "system/Patient.cud"), ("system/*.rs", "system/Patient.cud")),
    ("system/Patient.rs admin ingest:kobo", ("system/Patient.r", "ingest:*"), ("system/Patient.r", "ingest:kobo")),
    ("system/Observation.rs launch/patient openid", ("system/Patient.rs",), ()),
    ("system/Nonsense.rs system/Patient.xyz", ("system/*.cruds",), ()),
])
def test_granted_scopes_are_the_requested_ones_the_registration_allows(
    requested: str, held: tuple[str, ...], granted: tuple[str, ...],
) -> None:
    assert grant_scopes(requested.split(), held) == granted


def test_scope_beyond_the_registration_is_invalid_scope(store: ClientRegistry, clock: Clock) -> None:
    register(store, clock)
    error = refusal(issuer(store, clock), token_form(assertion("emr", TOKEN_URL, clock.now), scope="admin"))
    assert (error.error, error.status) == ("invalid_scope", 400)
    issued = issuer(store, clock).issue(
        token_form(assertion("emr", TOKEN_URL, clock.now), scope="system/Patient.cruds admin"), TOKEN_URL)
    assert issued.scope == "system/Patient.rs"


@pytest.mark.parametrize(("change", "error"), [
    ({"grant_type": None}, "invalid_request"),
    ({"grant_type": "authorization_code"}, "unsupported_grant_type"),
    ({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"}, "unsupported_grant_type"),
    ({"client_assertion_type": None}, "invalid_client"),
    ({"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"}, "invalid_client"),
    ({"client_assertion": None}, "invalid_client"),
    ({"client_assertion": "not.a.jwt"}, "invalid_client"),
    ({"client_assertion": "x" * 5000}, "invalid_client"),
    ({"scope": None}, "invalid_request"),
    ({"scope": " "}, "invalid_request"),
    ({"client_id": "lab"}, "invalid_client"),
])
def test_malformed_requests_get_the_right_error(
    store: ClientRegistry, clock: Clock, change: dict[str, str | None], error: str,
) -> None:
    register(store, clock)
    form = token_form(assertion("emr", TOKEN_URL, clock.now))
    for name, value in change.items():
        if value is None:
            form.pop(name, None)
        else:
            form[name] = value
    assert refusal(issuer(store, clock), form).error == error


def test_a_jku_header_must_be_the_registered_key_set_url(store: ClientRegistry, clock: Clock) -> None:
    register(store, clock)
    signed = sign(claims("emr", TOKEN_URL, clock.now), rsa_key(), "RS384", jku="https://evil.example.org/jwks")
    assert refusal(issuer(store, clock), token_form(signed)).error == "invalid_client"


@respx.mock
def test_a_jwks_uri_is_fetched_cached_and_refetched_for_an_unknown_kid(store: ClientRegistry, clock: Clock) -> None:
    register(store, clock, jwks={"jwks_uri": JWKS_URL})
    route = respx.get(JWKS_URL).mock(return_value=httpx.Response(200, json=public_jwks(rsa_key())))
    issue = issuer(store, clock)
    for _ in range(3):
        assert issue.issue(token_form(assertion("emr", TOKEN_URL, clock.now)), TOKEN_URL).access_token
    assert route.call_count == 1  # cached
    # The client rotates to an EC key: the unknown kid makes the gateway fetch the set again.
    route.mock(return_value=httpx.Response(200, json=public_jwks(ec_key())))
    clock.now += 10
    assert issue.issue(token_form(assertion("emr", TOKEN_URL, clock.now, ec_key())), TOKEN_URL).access_token
    assert route.call_count == 2
    # Made-up kids do not make it fetch again and again.
    stranger = RSAKey.generate_key(2048, parameters={"kid": "made-up"})
    for _ in range(3):
        assert refusal(issue, token_form(assertion("emr", TOKEN_URL, clock.now, stranger))).error == "invalid_client"
    assert route.call_count == 2
    # After the cache time the set is fetched again.
    clock.now += 300
    assert issue.issue(token_form(assertion("emr", TOKEN_URL, clock.now, ec_key())), TOKEN_URL).access_token
    assert route.call_count == 3


@respx.mock
def test_a_jwks_uri_response_may_forbid_caching(store: ClientRegistry, clock: Clock) -> None:
    register(store, clock, jwks={"jwks_uri": JWKS_URL})
    route = respx.get(JWKS_URL).mock(return_value=httpx.Response(
        200, json=public_jwks(rsa_key()), headers={"Cache-Control": "no-store"}))
    issue = issuer(store, clock)
    for _ in range(2):
        assert issue.issue(token_form(assertion("emr", TOKEN_URL, clock.now)), TOKEN_URL).access_token
    assert route.call_count == 2


@respx.mock
@pytest.mark.parametrize("max_age", ["\u00b2", "9" * 5000, "1e3", "-5"])
def test_a_jwks_uri_with_an_odd_max_age_is_used_not_a_server_error(
    store: ClientRegistry, clock: Clock, max_age: str,
) -> None:
    # The client's own server sends this header (byte 0xB2 reads "²" in Latin-1); "²".isdigit() is True
    # and float() refused it (a 500).
    register(store, clock, jwks={"jwks_uri": JWKS_URL})
    respx.get(JWKS_URL).mock(return_value=httpx.Response(
        200, json=public_jwks(rsa_key()), headers=[(b"Cache-Control", f"max-age={max_age}".encode("latin-1"))]))
    assert issuer(store, clock).issue(token_form(assertion("emr", TOKEN_URL, clock.now)), TOKEN_URL).access_token


@respx.mock
@pytest.mark.parametrize("response", [
    httpx.Response(404),
    httpx.Response(200, content=b"<html>"),
    httpx.Response(200, json=["not", "a", "set"]),
    httpx.Response(200, content=b'{"keys": [' + b'{"kty": "RSA"},' * 10_000 + b"{}]}"),
    httpx.Response(302, headers={"Location": "http://127.0.0.1/jwks"}),
], ids=["404", "not-json", "not-a-set", "too-large", "redirect"])
def test_a_jwks_uri_that_fails_refuses_the_client_and_names_why(
    store: ClientRegistry, clock: Clock, response: httpx.Response,
) -> None:
    register(store, clock, jwks={"jwks_uri": JWKS_URL})
    respx.get(JWKS_URL).mock(return_value=response)
    error = refusal(issuer(store, clock), token_form(assertion("emr", TOKEN_URL, clock.now)))
    assert (error.error, error.status) == ("invalid_client", 401)
    assert "key set" in error.diagnostics


@respx.mock
def test_a_jwks_uri_that_times_out_refuses_the_client(store: ClientRegistry, clock: Clock) -> None:
    register(store, clock, jwks={"jwks_uri": JWKS_URL})
    respx.get(JWKS_URL).mock(side_effect=httpx.ConnectTimeout("timed out"))
    error = refusal(issuer(store, clock), token_form(assertion("emr", TOKEN_URL, clock.now)))
    assert error.error == "invalid_client" and "ConnectTimeout" in error.diagnostics


@respx.mock
def test_a_jwks_uri_that_fails_is_not_fetched_again_for_every_request(store: ClientRegistry, clock: Clock) -> None:
    """Anyone can name a client in an assertion: while its key server fails (or hangs until the
    timeout), each anonymous token request made the gateway fetch the set again, holding a worker
    thread for the timeout (60 such requests stalled every search for 6 s)."""
    register(store, clock, jwks={"jwks_uri": JWKS_URL})
    route = respx.get(JWKS_URL).mock(return_value=httpx.Response(503))
    issue = issuer(store, clock)
    for _ in range(5):
        error = refusal(issue, token_form(assertion("emr", TOKEN_URL, clock.now)))
        assert error.error == "invalid_client" and "503" in error.diagnostics
    assert route.call_count == 1
    clock.now += 10
    route.mock(return_value=httpx.Response(200, json=public_jwks(rsa_key())))
    assert issue.issue(token_form(assertion("emr", TOKEN_URL, clock.now)), TOKEN_URL).access_token
    assert route.call_count == 2


def test_a_jwks_uri_is_fetched_by_one_request_at_a_time(clock: Clock) -> None:
    """Requests that come while the set is being fetched do not fetch it too, nor wait for it:
    they use the keys fetched before, or are refused at once."""
    started, release = threading.Event(), threading.Event()
    fetches: list[str] = []

    def slow_fetch(url: str) -> tuple[bytes, float | None]:
        fetches.append(url)
        started.set()
        assert release.wait(10)
        return json.dumps(public_jwks(rsa_key())).encode(), None

    key_sets = KeySets(fetch=slow_fetch, now=clock)
    registered = {"jwks_uri": JWKS_URL}

    def in_background() -> list[dict[str, Any]]:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(key_sets.keys, registered)
            assert started.wait(10)
            waited = time.monotonic()
            with pytest.raises(KeySetError):
                key_sets.keys(registered)  # nothing fetched yet: refused at once
            assert time.monotonic() - waited < 1
            release.set()
            return future.result(10)

    first = in_background()
    assert [key["kid"] for key in first] == ["rsa-1"] and len(fetches) == 1
    clock.now += 301  # expired: the next request fetches again; one arriving meanwhile gets the old keys
    started.clear()
    release.clear()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(key_sets.keys, registered)
        assert started.wait(10)
        assert key_sets.keys(registered) == first
        release.set()
        future.result(10)
    assert len(fetches) == 2


def test_registration_refuses_key_sets_that_cannot_work() -> None:
    private = {"keys": [rsa_key().as_dict(private=True)]}
    with pytest.raises(KeySetError, match="private"):
        check_key_set(private)
    with pytest.raises(KeySetError, match="RS384 or ES384"):
        check_key_set({"keys": [{"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ", "kid": "p256"}]})
    small = {"kty": "RSA", "n": base64.urlsafe_b64encode(b"\xc1" * 128).decode().rstrip("="), "e": "AQAB",
             "kid": "small"}  # 1024 bits
    with pytest.raises(KeySetError, match="2048"):
        check_key_set({"keys": [small]})
    with pytest.raises(KeySetError, match="kid"):
        check_key_set({"keys": [{k: v for k, v in ec_key().as_dict(private=False).items() if k != "kid"}]})
    off_curve = {**ec_key().as_dict(private=False), "x": base64.urlsafe_b64encode(b"\x07" * 48).decode()}
    with pytest.raises(KeySetError, match="key ec-1 is not a valid EC public key"):
        check_key_set({"keys": [off_curve]})
    with pytest.raises(KeySetError, match="https"):
        check_key_set({"jwks_uri": "http://emr.example.org/jwks"})
    with pytest.raises(KeySetError, match="not an http"):
        check_key_set({"jwks_uri": "https://[::1/jwks"})  # urlsplit refuses it (was a ValueError)
    with pytest.raises(KeySetError, match="keys"):
        check_key_set([])
    assert check_key_set({"jwks_uri": "http://127.0.0.1:9000/jwks"}) == {"jwks_uri": "http://127.0.0.1:9000/jwks"}
    assert check_key_set(public_jwks(rsa_key(), ec_key()))["keys"][1]["kid"] == "ec-1"
