"""Fixtures for the delivery tests: both queue backends on real databases, a manual clock."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from gateway.clock import ManualClock
from gateway.delivery.queue import DeliveryQueue
from gateway.delivery.redis_queue import RedisQueue
from gateway.delivery.sqlite_queue import SQLiteQueue

REDIS_URL = "redis://127.0.0.1:6379/1"  # DB 1 is the delivery tests' database

QueueFactory = Callable[[], Awaitable[DeliveryQueue]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A unique key prefix, whose keys are deleted after the test."""
    prefix = f"test:dq:{uuid.uuid4().hex[:12]}"
    yield prefix
    # Housekeeping only (the prefix is unique, so leftover keys harm no other test): bounded, because
    # a teardown of a PostgreSQL + Redis subscription test twice sat here for many minutes in CI.
    try:
        await asyncio.wait_for(_delete_keys(prefix), timeout=30)
    except TimeoutError:
        # Not a warning: the suite turns warnings into errors, and this is no failure of the test.
        logging.getLogger("tests").warning("Redis keys under %s not deleted within 30 s", prefix)


async def _delete_keys(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=10, socket_connect_timeout=10)
    try:
        batch = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(batch), 500):
            await client.delete(*batch[start : start + 500])
    finally:
        await client.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def queue_factory(request, tmp_path, clock, redis_prefix) -> AsyncIterator[QueueFactory]:
    """Opens queues of one backend over the same storage (so a test can reopen it)."""
    opened: list[DeliveryQueue] = []

    async def make() -> DeliveryQueue:
        queue: DeliveryQueue
        if request.param == "sqlite":
            queue = SQLiteQueue(tmp_path / "queue.db", clock=clock, lease=60.0)
        else:
            queue = RedisQueue.from_url(REDIS_URL, clock=clock, lease=60.0, prefix=redis_prefix)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        await queue.close()


@pytest.fixture
async def queue(queue_factory: QueueFactory) -> DeliveryQueue:
    return await queue_factory()
