"""Fixtures of the subscription tests: both store backends x both queue backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store import open_store
from tests.delivery.conftest import REDIS_URL, redis_prefix  # noqa: F401  (the fixture, re-used)
from tests.subscriptions.harness import Harness, fast_settings


@pytest.fixture(params=["sqlite", "redis"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A queue URL of each backend."""
    return f"sqlite:///{tmp_path}/queue.db" if request.param == "sqlite" else REDIS_URL


@pytest.fixture
async def harness(store_url: str, queue_url: str, redis_prefix: str) -> AsyncIterator[Harness]:  # noqa: F811
    """The gateway and the subscriber stand-in, on each store and queue backend."""
    store = open_store(store_url)
    try:
        async with Harness(fast_settings(store_url, queue_url, queue_prefix=redis_prefix), store) as harness:
            yield harness
    finally:
        store.close()


@pytest.fixture
async def sqlite_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """The gateway on SQLite (store and queue) and the subscriber stand-in."""
    url = f"sqlite:///{tmp_path}/store.db"
    store = open_store(url)
    try:
        async with Harness(fast_settings(url, f"sqlite:///{tmp_path}/queue.db"), store) as harness:
            yield harness
    finally:
        store.close()
