"""Token buckets in Redis, so every gateway process draws on one budget per client.

Each bucket is a small hash (``t`` tokens, ``s`` stamp) updated by one Lua script, which is
atomic, so concurrent processes cannot both take the last token. The time comes from the
caller (like the delivery queue's scripts), so tests can move it; the hosts of a deployment
keep their clocks in step with NTP, and a clock that reads behind the stamp adds nothing.
A key expires once its bucket would be full again, which is the same as no key.

Redis down or slow is no reason to refuse partners' requests: a failed call lets the
request through, logs a warning (the exception type only) at most once a minute and leaves
Redis alone for a second before trying again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
import redis.exceptions

from .redis_fail_open import FailOpen
from .token_bucket import ALLOWED, Decision

__all__ = ["DEFAULT_PREFIX", "RedisLimiter"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "gw:rl:"
# Mirrors ``token_bucket.take``. Numbers go in and out as strings: Redis would truncate a Lua
# number it returns to an integer.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local held = redis.call('HMGET', KEYS[1], 't', 's')
local tokens = tonumber(held[1])
local stamp = tonumber(held[2])
if tokens == nil or stamp == nil then
  tokens = burst
  stamp = now
end
if now > stamp then
  tokens = math.min(burst, tokens + (now - stamp) * rate)
  stamp = now
end
tokens = math.min(tokens, burst)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 's', string.format('%.17g', stamp))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil((burst - tokens) / rate * 1000) + 1000))
return {allowed, string.format('%.17g', wait)}
"""


class RedisLimiter:
    """``RateLimiter`` on Redis (see the module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        now: Callable[[], float] = time.time,
        pause_after_failure: float = 1.0,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self._now = now
        self._take = client.register_script(_TAKE)
        self._redis_down = FailOpen(log, "rate limits are not enforced: Redis failed (%s); requests are let through",
                                    pause_after_failure)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX, now: Callable[[], float] = time.time) -> RedisLimiter:
        """A limiter on the Redis at ``url``; short timeouts, since a request waits on each call."""
        client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        return cls(client, prefix=prefix, now=now)

    async def acquire(self, key: str, rate: float, burst: int) -> Decision:
        """Take one token from ``key``'s bucket; allowed without asking while Redis is failing."""
        now = self._now()
        if self._redis_down.skipping(now):
            return ALLOWED
        try:
            allowed, wait = await self._take(keys=[self.prefix + key], args=[repr(float(rate)), str(burst), repr(now)])
        except (redis.exceptions.RedisError, OSError) as exc:
            self._redis_down.failed(now, exc)
            return ALLOWED
        return ALLOWED if allowed == 1 else Decision(False, float(wait))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()
