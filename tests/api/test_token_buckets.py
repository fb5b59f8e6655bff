"""The token bucket contract, run against both limiters: in-process and real Redis (never skipped)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.api.token_bucket import InProcessLimiter, RateLimiter
from gateway.api.token_bucket_redis import RedisLimiter
from gateway.clock import ManualClock
from tests.api.conftest import REDIS_URL

LimiterFactory = Callable[[], RateLimiter]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["memory", "redis"])
async def limiters(request: pytest.FixtureRequest, clock: ManualClock, redis_prefix: str) -> AsyncIterator[
    LimiterFactory
]:
    """Makes limiters of one kind that share their buckets (Redis: one prefix; memory: one instance)."""
    opened: list[RateLimiter] = []
    shared = InProcessLimiter(now=clock.now)

    def make() -> RateLimiter:
        limiter: RateLimiter
        if request.param == "memory":
            limiter = shared
        else:
            limiter = RedisLimiter.from_url(REDIS_URL, prefix=redis_prefix, now=clock.now)
        opened.append(limiter)
        return limiter

    yield make
    for limiter in opened:
        await limiter.aclose()


async def take_all(limiter: RateLimiter, key: str, rate: float, burst: int, attempts: int) -> list[bool]:
    return [(await limiter.acquire(key, rate, burst)).allowed for _ in range(attempts)]


async def test_a_full_bucket_allows_the_burst_then_refuses_with_the_wait(limiters: LimiterFactory) -> None:
    limiter = limiters()
    assert await take_all(limiter, "a", 2.0, 5, 7) == [True] * 5 + [False] * 2
    refused = await limiter.acquire("a", 2.0, 5)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.5)  # one token at 2 a second


async def test_tokens_come_back_at_the_rate_and_never_past_the_burst(
    limiters: LimiterFactory, clock: ManualClock
) -> None:
    limiter = limiters()
    await take_all(limiter, "a", 4.0, 3, 3)
    await clock.advance(0.5)  # two tokens
    assert await take_all(limiter, "a", 4.0, 3, 3) == [True, True, False]
    await clock.advance(0.1)  # 0.4 of a token
    refused = await limiter.acquire("a", 4.0, 3)
    assert not refused.allowed and refused.retry_after == pytest.approx(0.15)
    await clock.advance(3600)  # an hour idle: full again, not 14,400 tokens
    assert await take_all(limiter, "a", 4.0, 3, 4) == [True, True, True, False]


async def test_each_key_has_its_own_bucket(limiters: LimiterFactory) -> None:
    limiter = limiters()
    assert await take_all(limiter, "a", 1.0, 2, 3) == [True, True, False]
    assert await take_all(limiter, "b", 1.0, 2, 3) == [True, True, False]


async def test_a_lowered_burst_caps_a_bucket_at_once(limiters: LimiterFactory) -> None:
    limiter = limiters()
    assert (await limiter.acquire("a", 1.0, 100)).allowed  # 99 left
    assert await take_all(limiter, "a", 1.0, 3, 4) == [True, True, True, False]


async def test_a_clock_behind_the_last_stamp_adds_nothing(limiters: LimiterFactory, clock: ManualClock) -> None:
    limiter = limiters()
    await clock.advance(10)
    await take_all(limiter, "a", 1.0, 2, 2)
    clock._now -= 5  # another process's clock, 5 s behind
    assert not (await limiter.acquire("a", 1.0, 2)).allowed
    clock._now += 5.5  # half a second after the stamp: still no whole token
    assert not (await limiter.acquire("a", 1.0, 2)).allowed
    clock._now += 0.5
    assert (await limiter.acquire("a", 1.0, 2)).allowed


async def test_two_limiters_on_the_same_store_share_one_budget(limiters: LimiterFactory) -> None:
    first, second = limiters(), limiters()
    assert await take_all(first, "a", 1.0, 4, 2) == [True, True]
    assert await take_all(second, "a", 1.0, 4, 3) == [True, True, False]
    assert not (await first.acquire("a", 1.0, 4)).allowed


# -- the in-process limiter's memory, and Redis's failures ------------------------------------


async def test_in_process_buckets_are_dropped_once_idle_long_enough_to_be_full(clock: ManualClock) -> None:
    limiter = InProcessLimiter(now=clock.now, sweep_seconds=60)
    for n in range(1000):
        await limiter.acquire(f"client-{n}", 10.0, 20)  # full again 0.1 s later
    await limiter.acquire("slow", 0.001, 5)  # full again 1000 s later
    assert len(limiter) == 1001
    await clock.advance(61)
    await limiter.acquire("busy", 10.0, 20)
    assert len(limiter) == 2  # "slow" and "busy"
    assert await take_all(limiter, "slow", 0.001, 5, 5) == [True] * 4 + [False]  # its state was kept


async def test_a_redis_bucket_expires_once_it_would_be_full(clock: ManualClock, redis_prefix: str) -> None:
    limiter = RedisLimiter.from_url(REDIS_URL, prefix=redis_prefix, now=clock.now)
    try:
        await take_all(limiter, "a", 2.0, 10, 4)  # 4 tokens short: full in 2 s
        ttl = await limiter.redis.pttl(f"{redis_prefix}a")
        assert 2000 < ttl <= 3000  # plus a second of slack
    finally:
        await limiter.aclose()


async def test_redis_down_lets_requests_through_and_warns_with_the_type_only(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.api.token_bucket_redis")
    limiter = RedisLimiter.from_url("redis://127.0.0.1:1/0", now=clock.now)  # nothing listens on port 1
    try:
        assert await take_all(limiter, "a", 1.0, 1, 5) == [True] * 5
        await clock.advance(2)  # past the pause: Redis is tried again, still down
        assert (await limiter.acquire("a", 1.0, 1)).allowed
    finally:
        await limiter.aclose()
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.api.token_bucket_redis"]
    assert warnings == ["rate limits are not enforced: Redis failed (ConnectionError); requests are let through"]


async def test_redis_is_asked_again_after_the_pause(clock: ManualClock, redis_prefix: str) -> None:
    limiter = RedisLimiter.from_url(REDIS_URL, prefix=redis_prefix, now=clock.now)
    calls: list[str] = []
    real = limiter._take

    async def failing(**kwargs: object) -> object:
        calls.append("down")
        raise OSError("unreachable")

    try:
        limiter._take = failing  # type: ignore[assignment]
        assert (await limiter.acquire("a", 1.0, 1)).allowed
        assert (await limiter.acquire("a", 1.0, 1)).allowed  # within the pause: not asked
        assert calls == ["down"]
        limiter._take = real
        await clock.advance(1.5)
        assert await take_all(limiter, "a", 1.0, 1, 2) == [True, False]  # enforced again
    finally:
        await limiter.aclose()

