"""Per-client rate limits over HTTP: 429 with Retry-After past a client's budget, on every endpoint."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.api.app import create_app
from gateway.api.token_bucket import InProcessLimiter
from gateway.api.token_bucket_redis import DEFAULT_PREFIX, RedisLimiter
from gateway.clock import ManualClock
from gateway.settings import Settings
from gateway.store import Store, open_store
from tests.api.conftest import REDIS_URL
from tests.conftest import make_token

ADMIN_TOKEN = "admin-token-for-rate-limit-tests-0123456789"
ALL = ("system/*.cruds", "admin", "ingest:*")


class Gateway:
    """One app (lifespan running) over a store shared by the test, with clients by name."""

    def __init__(self, app: Any, store: Store, clock: ManualClock) -> None:
        self.app = app
        self.store = store
        self.clock = clock
        self._clients: list[httpx.AsyncClient] = []

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://gateway.test",
                                   headers=headers)
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


GatewayFactory = Callable[..., Any]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path}/limits.db")
    yield opened
    opened.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gateway(tmp_path: Path, store: Store, clock: ManualClock) -> GatewayFactory:
    """``async with gateway(rate_limit={...}) as gw``: an app with these settings on the shared store."""

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[Gateway]:
        values: dict[str, Any] = {"queue_url": f"sqlite:///{tmp_path}/queue.db", **overrides}
        settings = Settings(store_url=f"sqlite:///{tmp_path}/limits.db", allowed_hosts=["gateway.test"],
                            admin_token=ADMIN_TOKEN, **values)
        app = create_app(settings, store=store, clock=clock)
        async with app.router.lifespan_context(app):
            gw = Gateway(app, store, clock)
            try:
                yield gw
            finally:
                await gw.aclose()

    return make


def named_token(store: Store, name: str, scopes: tuple[str, ...] = ALL) -> str:
    return make_token(store, scopes, name=name)


def assert_throttled(response: httpx.Response, retry_after: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == str(retry_after)
    assert response.headers["content-type"].startswith("application/fhir+json")
    issue = response.json()["issue"][0]
    assert response.json()["resourceType"] == "OperationOutcome"
    assert issue["code"] == "throttled" and f"retry after {retry_after} s" in issue["diagnostics"]


async def statuses(client: httpx.AsyncClient, count: int, path: str = "/fhir/Patient") -> list[int]:
    return [(await client.get(path)).status_code for _ in range(count)]


async def test_a_client_gets_its_burst_then_429_with_retry_after_then_tokens_at_the_rate(
    gateway: GatewayFactory, store: Store, clock: ManualClock
) -> None:
    async with gateway(rate_limit={"requests_per_second": 0.25, "burst": 3}) as gw:
        emr = gw.client(named_token(store, "emr"))
        assert await statuses(emr, 3) == [200, 200, 200]
        assert_throttled(await emr.get("/fhir/Patient"), 4)  # one token every 4 s
        await clock.advance(2.5)
        assert_throttled(await emr.get("/fhir/Patient"), 2)  # 1.5 s to go, rounded up
        await clock.advance(1.5)
        assert await statuses(emr, 2) == [200, 429]
        await clock.advance(3600)
        assert await statuses(emr, 4) == [200, 200, 200, 429]  # never more than the burst


async def test_a_refused_request_does_nothing(gateway: GatewayFactory, store: Store) -> None:
    async with gateway(rate_limit={"burst": 1}) as gw:
        emr = gw.client(named_token(store, "emr"))
        assert (await emr.get("/fhir/Patient")).status_code == 200
        refused = await emr.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"})
        assert refused.status_code == 429
        await gw.clock.advance(3600)
        assert (await emr.get("/fhir/Patient")).json()["total"] == 0


async def test_each_client_has_its_own_bucket_and_named_clients_their_own_limits(
    gateway: GatewayFactory, store: Store
) -> None:
    limits = {"requests_per_second": 1, "burst": 2, "clients": {"bulk": {"burst": 5}, "slow": {
        "requests_per_second": 0.1, "burst": 1}}}
    async with gateway(rate_limit=limits) as gw:
        emr, lab = gw.client(named_token(store, "emr")), gw.client(named_token(store, "lab"))
        bulk, slow = gw.client(named_token(store, "bulk")), gw.client(named_token(store, "slow"))
        assert await statuses(emr, 3) == [200, 200, 429]
        assert await statuses(lab, 3) == [200, 200, 429]  # emr's use took nothing of lab's
        assert await statuses(bulk, 6) == [200] * 5 + [429]
        assert (await bulk.get("/fhir/Patient")).headers["retry-after"] == "1"  # the default rate
        assert await statuses(slow, 2) == [200, 429]
        assert (await slow.get("/fhir/Patient")).headers["retry-after"] == "10"
        # Two tokens of one client draw on one bucket.
        emr2 = gw.client(named_token(store, "emr2"))
        assert await statuses(emr2, 1) == [200]


ENDPOINTS = [
    ("GET", "/fhir/Patient/some-id", None),  # the fast read route
    ("GET", "/fhir/Patient/some-id/_history", None),
    ("GET", "/fhir/Patient?name=x", None),
    ("POST", "/fhir/Patient", {"resourceType": "Patient"}),
    ("POST", "/fhir", {"resourceType": "Bundle", "type": "batch", "entry": []}),
    ("POST", "/ingest/nowhere", {"id": "1"}),
    ("GET", "/admin/destinations", None),
    ("GET", "/admin/quarantine", None),
    ("GET", "/fhir/metadata", None),  # open, but a client sending its token spends its budget
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_every_endpoint_takes_from_the_clients_budget_and_refuses_past_it(
    gateway: GatewayFactory, store: Store, method: str, path: str, body: Any
) -> None:
    async with gateway(rate_limit={"burst": 2}) as gw:
        emr = gw.client(named_token(store, "emr"))
        first = await emr.request(method, path, json=body)
        assert first.status_code != 429
        assert (await emr.get("/fhir/Patient")).status_code == 200  # the second token
        assert_throttled(await emr.request(method, path, json=body), 1)


async def test_the_admin_token_is_limited_and_can_have_its_own_limit(gateway: GatewayFactory) -> None:
    async with gateway(rate_limit={"burst": 2}) as gw:
        assert await statuses(gw.client(ADMIN_TOKEN), 3, "/admin/quarantine") == [200, 200, 429]
    async with gateway(rate_limit={"burst": 2, "clients": {"admin-token": {"burst": 4}}}) as gw:
        assert await statuses(gw.client(ADMIN_TOKEN), 5, "/admin/quarantine") == [200] * 4 + [429]


async def test_requests_without_a_valid_token_are_not_limited(gateway: GatewayFactory) -> None:
    async with gateway(rate_limit={"burst": 1}) as gw:
        anonymous = gw.client()
        assert await statuses(anonymous, 5, "/healthz") == [200] * 5
        assert await statuses(anonymous, 5, "/fhir/metadata") == [200] * 5
        assert await statuses(anonymous, 3) == [401] * 3
        assert await statuses(gw.client("not-a-valid-token"), 3) == [401] * 3
        assert await statuses(gw.client("not-a-valid-token"), 2, "/fhir/metadata") == [200] * 2


async def test_a_failing_token_lookup_fails_only_what_needs_a_token(
    gateway: GatewayFactory, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = named_token(store, "emr")
    async with gateway() as gw:

        def down(*args: object) -> None:
            raise ConnectionError("the database is gone")

        monkeypatch.setattr(store, "client_by_token_hash", down)
        monkeypatch.setattr(store, "ping", down)
        emr = gw.client(token)
        assert (await emr.get("/healthz")).status_code == 200  # as without the limiter
        assert (await emr.get("/readyz")).status_code == 503
        with pytest.raises(ConnectionError):  # the handler's own lookup fails: a 500, as before
            await emr.get("/fhir/Patient")


async def test_limits_can_be_turned_off(gateway: GatewayFactory, store: Store) -> None:
    async with gateway(rate_limit={"enabled": False, "burst": 1}) as gw:
        assert gw.app.state.ctx.limits is None
        assert await statuses(gw.client(named_token(store, "emr")), 5) == [200] * 5


# -- Redis ------------------------------------------------------------------------------------


@pytest.fixture
async def client_name() -> AsyncIterator[str]:
    """A client name no other test uses; its bucket key in Redis is deleted afterwards."""
    name = f"emr-{uuid.uuid4().hex[:12]}"
    yield name
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.delete(f"{DEFAULT_PREFIX}{name}")
    finally:
        await client.aclose()


async def test_gateways_on_one_redis_share_a_clients_budget(
    gateway: GatewayFactory, store: Store, client_name: str, clock: ManualClock
) -> None:
    limits = {"requests_per_second": 1, "burst": 4, "redis_url": REDIS_URL}
    token = named_token(store, client_name)
    async with gateway(rate_limit=limits) as one, gateway(rate_limit=limits) as two:
        assert isinstance(one.app.state.ctx.limits.limiter, RedisLimiter)
        first, second = one.client(token), two.client(token)
        assert await statuses(first, 2) == [200, 200]
        assert await statuses(second, 3) == [200, 200, 429]
        assert_throttled(await first.get("/fhir/Patient"), 1)
        await clock.advance(1)
        assert await statuses(second, 1) + await statuses(first, 1) == [200, 429]


async def test_buckets_are_in_redis_only_when_rate_limit_redis_url_says_so(gateway: GatewayFactory) -> None:
    async with gateway(queue_url=REDIS_URL) as gw:  # a Redis queue alone: still in memory
        assert isinstance(gw.app.state.ctx.limits.limiter, InProcessLimiter)
    async with gateway(rate_limit={"redis_url": REDIS_URL}) as gw:
        assert isinstance(gw.app.state.ctx.limits.limiter, RedisLimiter)


async def test_redis_down_lets_clients_through_with_a_warning(
    gateway: GatewayFactory, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    token = named_token(store, "emr")
    async with gateway(rate_limit={"burst": 1, "redis_url": "redis://127.0.0.1:1/0"}) as gw:
        assert await statuses(gw.client(token), 4) == [200] * 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "rate limits" in r.getMessage()]
    assert len(warnings) == 1 and "ConnectionError" in warnings[0].getMessage()
    assert token not in caplog.text


def test_the_redis_url_must_be_one() -> None:
    with pytest.raises(ValueError, match="redis://"):
        Settings(rate_limit={"redis_url": "http://127.0.0.1:6379"})
    with pytest.raises(ValueError, match="Port could not be cast"):
        Settings(rate_limit={"redis_url": "redis://127.0.0.1:sixty/0"})
