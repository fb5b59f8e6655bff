"""SMART Backend Services over HTTP, on both store backends: discovery, the token endpoint, and its tokens at work.

Assertions are signed with joserfc (independent of the gateway's pyjwt). Where time matters
the app's authenticator and token issuer are swapped for ones on a manual clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.api import create_app
from gateway.auth import Authenticator, KeySets, TokenIssuer
from gateway.settings import Settings
from gateway.store import ApiClient, Store, open_store
from tests.support.smart import assertion, ec_key, public_jwks, rsa_key, token_form

BASE = "http://gateway.test"
TOKEN_URL = f"{BASE}/auth/token"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running(store_url: str, **overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Store]]:
    """An app over ``store_url`` and an anonymous client for it."""
    settings = Settings(store_url=store_url, allowed_hosts=["gateway.test"], **overrides)
    store = open_store(store_url)
    app = create_app(settings, store=store)
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=BASE,
        ) as client:
            yield app, client, store
    finally:
        store.close()


def register(store: Store, scopes: tuple[str, ...] = ("system/Patient.rs",), name: str = "emr") -> None:
    store.save_client(ApiClient(name, scopes, datetime.now(UTC), jwks=public_jwks(rsa_key(), ec_key())),
                      f"hash-{name}")


def on_clock(app: FastAPI, clock: Clock) -> None:
    """Give an app's authenticator and token issuer a manual clock."""
    ctx = app.state.ctx
    ctx.auth = Authenticator(ctx.store, now=clock)
    ctx.tokens = TokenIssuer(ctx.store, KeySets(now=clock), lifetime=ctx.settings.smart.access_token_seconds,
                             now=clock)


async def get_token(client: httpx.AsyncClient, form: dict[str, str]) -> httpx.Response:
    return await client.post("/auth/token", data=form)


@pytest.mark.parametrize("path", ["/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"])
async def test_smart_configuration_is_open_and_names_the_token_endpoint(store_url: str, path: str) -> None:
    async with running(store_url) as (_, client, _):
        response = await client.get(path)
        assert response.status_code == 200
        config = response.json()
        assert config["token_endpoint"] == TOKEN_URL
        assert config["grant_types_supported"] == ["client_credentials"]
        assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
        assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
        assert {"client-confidential-asymmetric", "permission-v2"} <= set(config["capabilities"])
        assert "system/*.rs" in config["scopes_supported"]
        # Any other Host header names where the gateway listens, never the header.
        stray = await client.get(path, headers={"Host": "evil.example.org"})
        assert stray.json()["token_endpoint"] == "http://127.0.0.1:8080/auth/token"


async def test_the_token_url_follows_public_base_url_or_the_setting(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/a.db"
    async with running(url, public_base_url="https://hie.example.org/gw/fhir/") as (_, client, _):
        config = (await client.get("/.well-known/smart-configuration")).json()
        assert config["token_endpoint"] == "https://hie.example.org/gw/auth/token"
    async with running(url, smart={"token_url": "https://auth.example.org/token"}) as (_, client, _):
        config = (await client.get("/fhir/.well-known/smart-configuration")).json()
        assert config["token_endpoint"] == "https://auth.example.org/token"


async def test_the_capability_statement_names_the_token_endpoint(store_url: str) -> None:
    async with running(store_url) as (_, client, _):
        security = (await client.get("/fhir/metadata")).json()["rest"][0]["security"]
        assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
        assert security["extension"] == [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{"url": "token", "valueUri": TOKEN_URL}],
        }]


@pytest.mark.parametrize("key", [rsa_key, ec_key], ids=["RS384", "ES384"])
async def test_a_token_reads_what_its_scopes_allow_and_nothing_else(store_url: str, key: Any) -> None:
    async with running(store_url) as (_, client, store):
        register(store, ("system/Patient.rs", "system/Observation.rs"))
        form = token_form(assertion("emr", TOKEN_URL, datetime.now(UTC).timestamp(), key()),
                          scope="system/Patient.rs system/Encounter.rs")
        response = await get_token(client, form)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
        assert (body["token_type"], body["expires_in"], body["scope"]) == ("bearer", 300, "system/Patient.rs")
        headers = {"Authorization": f"Bearer {body['access_token']}"}
        assert (await client.get("/fhir/Patient/nobody", headers=headers)).status_code == 404  # allowed, absent
        assert (await client.get("/fhir/Patient", headers=headers)).status_code == 200
        assert (await client.get("/fhir/Observation", headers=headers)).status_code == 403  # held, not granted
        assert (await client.post("/fhir/Patient", headers=headers,
                                  json={"resourceType": "Patient"})).status_code == 403


async def test_refusals_are_oauth_errors_that_never_echo_the_assertion(store_url: str) -> None:
    async with running(store_url) as (_, client, store):
        register(store)
        now = datetime.now(UTC).timestamp()
        cases = [
            (token_form(assertion("emr", "https://elsewhere.example.org/token", now)), 401, "invalid_client"),
            (token_form(assertion("nobody", TOKEN_URL, now)), 401, "invalid_client"),
            (token_form(assertion("emr", TOKEN_URL, now), scope="admin"), 400, "invalid_scope"),
            ({**token_form(assertion("emr", TOKEN_URL, now)), "grant_type": "password"}, 400,
             "unsupported_grant_type"),
            # No client name holds a NUL (PostgreSQL's text cannot: an anonymous 500 with its stack logged)
            (token_form(assertion("em\x00r", TOKEN_URL, now, sub="em\x00r")), 401, "invalid_client"),
            (token_form(assertion("e" * 5000, TOKEN_URL, now, sub="e" * 5000)), 401, "invalid_client"),
            # ... nor a jti, which the store keeps against replays
            (token_form(assertion("emr", TOKEN_URL, now, jti="j\x00ti")), 401, "invalid_client"),
        ]
        for form, status, error in cases:
            response = await get_token(client, form)
            assert (response.status_code, response.json()["error"]) == (status, error)
            assert set(response.json()) == {"error", "error_description"}
            assert response.headers["cache-control"] == "no-store"
            assert form["client_assertion"] not in response.text
            assert form["client_assertion"].split(".")[1] not in response.text
        assert (await get_token(client, cases[1][0])).headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("content", "content_type"), [
    (b"grant_type=client_credentials", "application/json"),
    (b'{"grant_type": "client_credentials"}', "application/json"),
    (b"\xff\xfe=\xff", "application/x-www-form-urlencoded"),
    (b"grant_type", "application/x-www-form-urlencoded"),
    (b"grant_type=client_credentials&grant_type=client_credentials", "application/x-www-form-urlencoded"),
    (b"a=" + b"x" * 20_000, "application/x-www-form-urlencoded"),
    (b"&".join(b"f%d=1" % i for i in range(100)), "application/x-www-form-urlencoded"),
    (b"", "application/x-www-form-urlencoded"),
    (b"", ""),
    (b"grant_type=client_credentials&client_assertion_type=x&client_assertion=%00%ff&scope=%",
     "application/x-www-form-urlencoded"),
], ids=["json-type", "json", "not-utf8", "no-equals", "repeated", "too-large", "too-many-fields", "empty",
        "no-type", "garbage-assertion"])
async def test_malformed_bodies_get_400_never_500(tmp_path: Path, content: bytes, content_type: str) -> None:
    async with running(f"sqlite:///{tmp_path}/m.db") as (_, client, _):
        headers = {"Content-Type": content_type} if content_type else {}
        response = await client.post("/auth/token", content=content, headers=headers)
        assert response.status_code in (400, 401), response.text
        assert response.json()["error"] in ("invalid_request", "invalid_client")


async def test_a_replayed_assertion_is_refused_by_a_second_app_on_the_same_store(store_url: str) -> None:
    async with running(store_url) as (_, first, store), running(store_url) as (_, second, _):
        register(store)
        form = token_form(assertion("emr", TOKEN_URL, datetime.now(UTC).timestamp()))
        assert (await get_token(first, form)).status_code == 200
        for client in (second, first):
            replay = await get_token(client, form)
            assert (replay.status_code, replay.json()["error"]) == (401, "invalid_client")
            assert "jti" in replay.json()["error_description"]


async def test_revoking_the_client_refuses_its_access_token_within_a_second(store_url: str) -> None:
    clock = Clock()
    async with running(store_url) as (app, client, store), running(store_url) as (other, second, _):
        on_clock(app, clock)
        on_clock(other, clock)
        register(store)
        issued = await get_token(client, token_form(assertion("emr", TOKEN_URL, clock.now)))
        headers = {"Authorization": f"Bearer {issued.json()['access_token']}"}
        for http in (client, second):
            assert (await http.get("/fhir/Patient", headers=headers)).status_code == 200
        assert store.revoke_client("emr")
        clock.now += 1.0
        for http in (client, second):
            assert (await http.get("/fhir/Patient", headers=headers)).status_code == 401
        refused = await get_token(client, token_form(assertion("emr", TOKEN_URL, clock.now)))
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")


async def test_an_access_token_stops_at_its_lifetime(tmp_path: Path) -> None:
    clock = Clock()
    async with running(f"sqlite:///{tmp_path}/l.db", smart={"access_token_seconds": 60}) as (app, client, store):
        on_clock(app, clock)
        register(store)
        issued = (await get_token(client, token_form(assertion("emr", TOKEN_URL, clock.now)))).json()
        assert issued["expires_in"] == 60
        headers = {"Authorization": f"Bearer {issued['access_token']}"}
        assert (await client.get("/fhir/Patient", headers=headers)).status_code == 200
        clock.now += 60
        assert (await client.get("/fhir/Patient", headers=headers)).status_code == 401


async def test_opaque_client_tokens_keep_working(tmp_path: Path) -> None:
    from tests.conftest import make_token

    async with running(f"sqlite:///{tmp_path}/o.db") as (_, client, store):
        token = make_token(store, ("system/Patient.rs",))
        response = await client.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
