"""Fixtures shared by the API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.api.app import create_app
from gateway.settings import Settings
from gateway.store import Store
from tests.conftest import ApiHarness
from tests.support.gateway_app import MACHINE_SPEED_LIMITS


@pytest.fixture
async def api_on(store_url: str, store: Store) -> AsyncIterator[ApiHarness]:
    """The app in-process on each store backend."""
    settings = Settings(store_url=store_url, allowed_hosts=["gateway.test"], rate_limit=MACHINE_SPEED_LIMITS)
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        harness = ApiHarness(app, store)
        yield harness
        await harness.aclose()
