"""Fixtures shared by the API tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.api.app import create_app
from gateway.settings import Settings
from gateway.store import Store
from tests.conftest import ApiHarness
from tests.support.gateway_app import MACHINE_SPEED_LIMITS

#: DB 2: the rate limit and login throttle tests'; keys carry a per-test prefix.
REDIS_URL = "redis://127.0.0.1:6379/2"


@pytest.fixture
async def api_on(store_url: str, store: Store) -> AsyncIterator[ApiHarness]:
    """The app in-process on each store backend."""
    settings = Settings(store_url=store_url, allowed_hosts=["gateway.test"], rate_limit=MACHINE_SPEED_LIMITS)
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        harness = ApiHarness(app, store)
        yield harness
        await harness.aclose()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix no other test uses (on ``REDIS_URL``); its keys are deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
