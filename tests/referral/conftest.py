"""Referral fixtures: the gateway app with ingest (shipped mappings) on each store backend; the
delivery tests' Redis key prefix (deleted after each test)."""

from collections.abc import AsyncIterator

import pytest

from gateway.store import Store
from tests.delivery.conftest import redis_prefix
from tests.ingest.conftest import MAPPINGS, Harness, make_app

__all__ = ["gw", "redis_prefix"]


@pytest.fixture
async def gw(store: Store) -> AsyncIterator[Harness]:
    """The app running (lifespan entered) over ``store``, with an ingest client."""
    app = make_app(store, MAPPINGS)
    async with app.router.lifespan_context(app):
        harness = Harness(app, store, MAPPINGS)
        yield harness
        await harness.aclose()
