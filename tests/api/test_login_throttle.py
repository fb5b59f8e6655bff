"""Failed-attempt throttling of the credential endpoints: ``POST /auth/token`` and the console's login.

Each client comes from an address of its own (``ASGITransport(client=...)``), as uvicorn
hands the app the peer's (or a trusted proxy's forwarded) address. Time is a ``ManualClock``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api.app import create_app
from gateway.api.failure_window import FailureCounter, InProcessCounter
from gateway.api.failure_window_redis import RedisCounter
from gateway.clock import ManualClock
from gateway.settings import LoginThrottleSettings, Settings
from gateway.store import ApiClient, Store, open_store
from tests.api.conftest import REDIS_URL
from tests.conftest import make_token
from tests.support.smart import assertion, ec_key, public_jwks, rsa_key, token_form

BASE = "http://gateway.test"
TOKEN_URL = f"{BASE}/auth/token"
ATTACKER = "203.0.113.7"
PARTNER = "198.51.100.20"
#: Failures one address may make (the default): a conformance suite's handful of refused
#: assertions from one machine must not lock its later good ones out.
LIMIT = LoginThrottleSettings().max_failures
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Gateway:
    """One app (lifespan running) on a manual clock, with clients from chosen addresses."""

    def __init__(self, app: Any, store: Store, clock: ManualClock) -> None:
        self.app = app
        self.store = store
        self.clock = clock
        self._clients: list[httpx.AsyncClient] = []

    def client(self, address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        client = httpx.AsyncClient(transport=transport, base_url=BASE, follow_redirects=False)
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path}/throttle.db")
    opened.save_client(ApiClient("emr", ("system/Patient.rs",), datetime.now(UTC), jwks=public_jwks(rsa_key())),
                       "hash-emr")
    opened.save_client(ApiClient("lab", ("system/Patient.rs",), datetime.now(UTC), jwks=public_jwks(rsa_key())),
                       "hash-lab")
    yield opened
    opened.close()


@asynccontextmanager
async def running(tmp_path: Path, store: Store, clock: ManualClock | None = None,
                  **overrides: Any) -> AsyncIterator[Gateway]:
    settings = Settings(store_url=f"sqlite:///{tmp_path}/throttle.db", queue_url=f"sqlite:///{tmp_path}/q.db",
                        allowed_hosts=["gateway.test"], **overrides)
    clock = clock or ManualClock()
    app = create_app(settings, store=store, clock=clock)
    async with app.router.lifespan_context(app):
        gw = Gateway(app, store, clock)
        try:
            yield gw
        finally:
            await gw.aclose()


def good(client_id: str = "emr") -> dict[str, str]:
    return token_form(assertion(client_id, TOKEN_URL, datetime.now(UTC).timestamp()))


def bad(client_id: str = "emr") -> dict[str, str]:
    # Signed by a key the client never registered (same kid): a guess at its credentials.
    return token_form(assertion(client_id, TOKEN_URL, datetime.now(UTC).timestamp(), ec_key("rsa-1")))


async def fail(client: httpx.AsyncClient, times: int, client_id: str = "emr") -> None:
    for _ in range(times):
        answer = await client.post("/auth/token", data=bad(client_id))
        assert answer.status_code == 401, answer.text


# -- the token endpoint ------------------------------------------------------------------------


async def test_a_bad_assertion_past_the_limit_from_one_address_gets_429_with_retry_after(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(tmp_path, store) as gw:
        attacker = gw.client(ATTACKER)
        await fail(attacker, LIMIT)
        form = bad()
        answer = await attacker.post("/auth/token", data=form)
        assert answer.status_code == 429
        assert answer.headers["retry-after"] == "300"
        assert answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert set(body) == {"error", "error_description"}
        assert body["error"] == "temporarily_unavailable"
        assert "300 s" in body["error_description"]
        assert form["client_assertion"] not in answer.text
        # Even a good assertion waits: the throttle answers before any credential is looked at.
        assert (await attacker.post("/auth/token", data=good())).status_code == 429
        await gw.clock.advance(100)
        assert (await attacker.post("/auth/token", data=good())).headers["retry-after"] == "200"
    assert all(form["client_assertion"] not in record.getMessage() for record in caplog.records)


async def test_a_good_client_from_another_address_still_gets_its_token(tmp_path: Path, store: Store) -> None:
    async with running(tmp_path, store) as gw:
        attacker, partner = gw.client(ATTACKER), gw.client(PARTNER)
        await fail(attacker, LIMIT)
        assert (await attacker.post("/auth/token", data=good())).status_code == 429
        for client_id in ("emr", "lab"):
            answer = await partner.post("/auth/token", data=good(client_id))
            assert answer.status_code == 200, answer.text
        # A success elsewhere resets nothing.
        assert (await attacker.post("/auth/token", data=good())).status_code == 429


async def test_the_window_closes_and_the_address_may_try_again(tmp_path: Path, store: Store) -> None:
    async with running(tmp_path, store) as gw:
        attacker = gw.client(ATTACKER)
        await fail(attacker, LIMIT)
        assert (await attacker.post("/auth/token", data=good())).status_code == 429
        await gw.clock.advance(299)
        assert (await attacker.post("/auth/token", data=good())).status_code == 429
        await gw.clock.advance(1)
        assert (await attacker.post("/auth/token", data=good())).status_code == 200
        # A new window: ten more failures before the next 429.
        await fail(attacker, LIMIT)
        assert (await attacker.post("/auth/token", data=bad())).status_code == 429


async def test_successful_token_requests_are_not_counted(tmp_path: Path, store: Store) -> None:
    async with running(tmp_path, store, login_throttle={"max_failures": 2}) as gw:
        partner = gw.client(PARTNER)
        for _ in range(5):
            assert (await partner.post("/auth/token", data=good())).status_code == 200
        await fail(partner, 1)
        assert (await partner.post("/auth/token", data=good())).status_code == 200
        await fail(partner, 1)
        assert (await partner.post("/auth/token", data=good())).status_code == 429


async def test_every_refused_token_request_counts_whatever_its_grant(tmp_path: Path, store: Store) -> None:
    async with running(tmp_path, store, login_throttle={"max_failures": 3}) as gw:
        client = gw.client(ATTACKER)
        refused = [
            await client.post("/auth/token", data={"grant_type": "password", "username": "a", "password": "b"}),
            await client.post("/auth/token", content=b"not a form", headers={"content-type": "text/plain"}),
            await client.post("/auth/token", data={**good(), "client_assertion": "x.y.z"}),
        ]
        assert [answer.status_code for answer in refused] == [400, 400, 401]
        answer = await client.post("/auth/token", data={"grant_type": "password"})
        assert answer.status_code == 429 and answer.json()["error"] == "temporarily_unavailable"


async def test_a_guess_at_one_client_spread_over_addresses_is_slowed(tmp_path: Path, store: Store) -> None:
    async with running(tmp_path, store, login_throttle={"max_client_failures": 6}) as gw:
        for n in range(3):
            await fail(gw.client(f"192.0.2.{n + 1}"), 2, "emr")
        fresh = gw.client("192.0.2.99")
        answer = await fresh.post("/auth/token", data=bad("emr"))
        assert answer.status_code == 429
        assert answer.headers["retry-after"] == "300"
        # The client named by client_id counts the same as the assertion's iss.
        assert (await fresh.post("/auth/token", data={**good("emr"), "client_id": "emr"})).status_code == 429
        # Another client from that address is not held back.
        assert (await fresh.post("/auth/token", data=good("lab"))).status_code == 200


async def test_an_unknown_client_name_counts_like_a_known_one(tmp_path: Path, store: Store) -> None:
    # Otherwise the throttle would tell which client names exist.
    async with running(tmp_path, store, login_throttle={"max_client_failures": 2}) as gw:
        await fail(gw.client("192.0.2.1"), 2, "nobody")
        answer = await gw.client("192.0.2.2").post("/auth/token", data=bad("nobody"))
        assert answer.status_code == 429


async def test_ipv6_clients_count_by_their_64(tmp_path: Path, store: Store) -> None:
    async with running(tmp_path, store, login_throttle={"max_failures": 2}) as gw:
        await fail(gw.client("2001:db8:1:2::1"), 1)
        await fail(gw.client("2001:db8:1:2::beef"), 1)
        assert (await gw.client("2001:db8:1:2:ffff::9").post("/auth/token", data=good())).status_code == 429
        assert (await gw.client("2001:db8:1:3::1").post("/auth/token", data=good())).status_code == 200


async def test_the_throttle_can_be_switched_off(tmp_path: Path, store: Store) -> None:
    async with running(tmp_path, store, login_throttle={"enabled": False}) as gw:
        attacker = gw.client(ATTACKER)
        await fail(attacker, 12)
        assert (await attacker.post("/auth/token", data=good())).status_code == 200


# -- the console's login -----------------------------------------------------------------------


async def console_login(client: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await client.get("/console/login")
    found = _CSRF.search(form.text)
    assert found is not None
    return await client.post("/console/login", data={"token": token, "csrf": found.group(1), "next": "/console"})


async def test_the_console_login_is_throttled_past_the_limit(tmp_path: Path, store: Store) -> None:
    admin = make_token(store, ("admin",), name="ops")
    async with running(tmp_path, store) as gw:
        attacker, operator = gw.client(ATTACKER), gw.client(PARTNER)
        for n in range(LIMIT):
            answer = await console_login(attacker, f"gw_not-a-token-{n}")
            assert answer.status_code == 401
        answer = await console_login(attacker, "gw_not-a-token-last")
        assert answer.status_code == 429
        assert answer.headers["retry-after"] == "300"
        assert "Too many failed logins from this address; try again in 5 minutes." in answer.text
        assert 'name="token"' in answer.text  # the login page, with its form
        # The right token waits too; an operator elsewhere logs in.
        assert (await console_login(attacker, admin)).status_code == 429
        assert (await console_login(operator, admin)).status_code == 303
        await gw.clock.advance(300)
        assert (await console_login(attacker, admin)).status_code == 303


async def test_console_and_token_failures_from_one_address_count_together(tmp_path: Path, store: Store) -> None:
    async with running(tmp_path, store, login_throttle={"max_failures": 4}) as gw:
        attacker = gw.client(ATTACKER)
        await fail(attacker, 2)
        for _ in range(2):
            assert (await console_login(attacker, "gw_guess")).status_code == 401
        assert (await attacker.post("/auth/token", data=good())).status_code == 429
        assert (await console_login(attacker, "gw_guess")).status_code == 429


async def test_a_valid_token_without_admin_is_not_a_failed_login(tmp_path: Path, store: Store) -> None:
    reader = make_token(store, ("system/*.rs",), name="reader")
    async with running(tmp_path, store, login_throttle={"max_failures": 1}) as gw:
        client = gw.client(PARTNER)
        for _ in range(3):
            assert (await console_login(client, reader)).status_code == 403


# -- the counters ------------------------------------------------------------------------------


async def test_the_in_process_counter_stays_bounded() -> None:
    clock = ManualClock()
    counter = InProcessCounter(now=clock.now, max_keys=100)
    for n in range(1000):
        await counter.failed([f"a:{n}"], 300)
    assert len(counter) <= 100
    # The newest keys are kept.
    assert await counter.wait({"a:999": 1}, 300) == 300
    await clock.advance(301)
    await counter.failed(["a:x"], 300)
    await clock.advance(60)
    await counter.failed(["a:y"], 300)
    assert len(counter) == 2


async def test_gateways_on_one_redis_count_an_address_together(
    tmp_path: Path, store: Store, redis_prefix: str,
) -> None:
    clock = ManualClock()
    settings: dict[str, Any] = {"rate_limit": {"redis_url": REDIS_URL}, "login_throttle": {"max_failures": 4}}
    async with running(tmp_path, store, clock, **settings) as one, running(tmp_path, store, clock, **settings) as two:
        for gw in (one, two):
            throttle = gw.app.state.ctx.throttle
            assert isinstance(throttle.counter, RedisCounter)
            await throttle.counter.aclose()
            throttle.counter = RedisCounter.from_url(REDIS_URL, prefix=redis_prefix, now=clock.now)
        await fail(one.client(ATTACKER), 2)
        await fail(two.client(ATTACKER), 2)
        answer = await one.client(ATTACKER).post("/auth/token", data=good())
        assert answer.status_code == 429 and answer.headers["retry-after"] == "300"
        assert (await two.client(PARTNER).post("/auth/token", data=good())).status_code == 200
        await clock.advance(300)
        assert (await two.client(ATTACKER).post("/auth/token", data=good())).status_code == 200


async def test_the_redis_counter_mirrors_the_in_process_one(redis_prefix: str) -> None:
    clock = ManualClock()
    counters: list[FailureCounter] = [InProcessCounter(now=clock.now),
                                      RedisCounter.from_url(REDIS_URL, prefix=redis_prefix, now=clock.now)]
    try:
        for counter in counters:
            await counter.failed(["a:1", "c:emr"], 60)
        await clock.advance(10)
        for counter in counters:
            await counter.failed(["a:1"], 60)
        for limits, expected in [({"a:1": 2}, 50.0), ({"a:1": 3}, 0.0), ({"c:emr": 1, "a:1": 3}, 50.0),
                                 ({"a:2": 1}, 0.0)]:
            assert [await counter.wait(limits, 60) for counter in counters] == [expected, expected]
        await clock.advance(50)
        assert [await counter.wait({"a:1": 1}, 60) for counter in counters] == [0.0, 0.0]
    finally:
        for counter in counters:
            await counter.aclose()


async def test_redis_down_lets_logins_through_with_a_warning(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    overrides: dict[str, Any] = {"rate_limit": {"redis_url": "redis://127.0.0.1:1/0"},
                                 "login_throttle": {"max_failures": 1}}
    async with running(tmp_path, store, **overrides) as gw:
        client = gw.client(ATTACKER)
        await fail(client, 3)
        assert (await client.post("/auth/token", data=good())).status_code == 200
    assert any("failed logins are not throttled" in record.getMessage() for record in caplog.records)
