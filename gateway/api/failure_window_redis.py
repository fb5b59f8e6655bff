"""Failure windows in Redis, so every gateway process counts one client address's failed logins together.

Each key is a small hash (``n`` failures, ``s`` window start) read and updated by Lua scripts,
which are atomic. As with the rate limits' buckets (``token_bucket_redis``) the time comes
from the caller, so tests can move it; a key expires a second after its window would close.

Redis down or slow is no reason to refuse a login: a failed call lets the attempt through
(and counts nothing), logs a warning (the exception type only) at most once a minute and
leaves Redis alone for a second before trying again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

import redis.asyncio as aioredis
import redis.exceptions

from .redis_fail_open import FailOpen

__all__ = ["DEFAULT_PREFIX", "RedisCounter"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "gw:lt:"
# Mirror ``failure_window.wait_of`` and ``count_failure``. Numbers leave as strings: Redis
# would truncate a Lua number it returns to an integer.
_WAIT = """
local window = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local wait = 0
for i, key in ipairs(KEYS) do
  local held = redis.call('HMGET', key, 'n', 's')
  local count = tonumber(held[1])
  local start = tonumber(held[2])
  if count ~= nil and start ~= nil and count >= tonumber(ARGV[i + 2]) and now < start + window then
    wait = math.max(wait, math.min(window, start + window - now))
  end
end
return string.format('%.17g', wait)
"""
_FAILED = """
local window = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  local held = redis.call('HMGET', key, 'n', 's')
  local count = tonumber(held[1])
  local start = tonumber(held[2])
  if count == nil or start == nil or count <= 0 or now >= start + window then
    count = 0
    start = now
  end
  redis.call('HSET', key, 'n', string.format('%d', count + 1), 's', string.format('%.17g', start))
  redis.call('PEXPIRE', key, string.format('%d', math.ceil((start + window - now) * 1000) + 1000))
end
return 0
"""


class RedisCounter:
    """``FailureCounter`` on Redis (see the module docstring)."""

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
        self._wait = client.register_script(_WAIT)
        self._failed = client.register_script(_FAILED)
        self._redis_down = FailOpen(log, "failed logins are not throttled: Redis failed (%s); attempts are let through",
                                    pause_after_failure)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX, now: Callable[[], float] = time.time) -> RedisCounter:
        """A counter on the Redis at ``url``; short timeouts, since a login waits on each call."""
        client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        return cls(client, prefix=prefix, now=now)

    async def wait(self, limits: Mapping[str, int], window: float) -> float:
        """Seconds until every key in ``limits`` is below its limit again; 0 while Redis is failing."""
        if not limits:
            return 0.0
        now = self._now()
        if self._redis_down.skipping(now):
            return 0.0
        keys = [self.prefix + key for key in limits]
        try:
            wait = await self._wait(keys=keys, args=[repr(float(window)), repr(now), *map(str, limits.values())])
        except (redis.exceptions.RedisError, OSError) as exc:
            self._redis_down.failed(now, exc)
            return 0.0
        return float(wait)

    async def failed(self, keys: Sequence[str], window: float) -> None:
        """Count one failure against each of ``keys`` (nothing is counted while Redis is failing)."""
        now = self._now()
        if not keys or self._redis_down.skipping(now):
            return
        try:
            await self._failed(keys=[self.prefix + key for key in keys], args=[repr(float(window)), repr(now)])
        except (redis.exceptions.RedisError, OSError) as exc:
            self._redis_down.failed(now, exc)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()
