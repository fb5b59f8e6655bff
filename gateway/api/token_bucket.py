"""Token buckets: the rate limiter's protocol and its in-process implementation.

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens a second; a request takes
one, and is refused while the bucket is empty. A bucket that has been idle long enough to
be full again is the same as no bucket, which is how both implementations bound their
memory (this one sweeps such buckets out, the Redis one lets their keys expire).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ALLOWED", "Decision", "InProcessLimiter", "RateLimiter", "take"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a request may go ahead, and if not, how many seconds until it may."""

    allowed: bool
    retry_after: float = 0.0


ALLOWED = Decision(True)


class RateLimiter(Protocol):
    """Token buckets by key (the client's name), with the limits given on each call."""

    async def acquire(self, key: str, rate: float, burst: int) -> Decision:
        """Take one token from ``key``'s bucket (``rate`` tokens a second, at most ``burst``)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def take(tokens: float, stamp: float, now: float, rate: float, burst: int) -> tuple[float, float, Decision]:
    """One request against a bucket holding ``tokens`` at ``stamp``: the new tokens and stamp, and the decision.

    A clock that reads earlier than ``stamp`` (another process's clock, a step back) adds
    nothing and does not move the stamp back. The Redis script does the same in Lua.
    """
    if now > stamp:
        tokens = min(float(burst), tokens + (now - stamp) * rate)
        stamp = now
    tokens = min(tokens, float(burst))  # the client's burst may have been lowered
    if tokens >= 1.0:
        return tokens - 1.0, stamp, ALLOWED
    return tokens, stamp, Decision(False, (1.0 - tokens) / rate)


class InProcessLimiter:
    """Buckets in this process's memory (one gateway process, or one budget per process)."""

    def __init__(self, now: Callable[[], float] = time.monotonic, sweep_seconds: float = 60.0) -> None:
        self._now = now
        self._sweep_seconds = sweep_seconds
        self._next_sweep = now() + sweep_seconds
        # key -> [tokens, stamp, time the bucket is full again]
        self._buckets: dict[str, list[float]] = {}

    async def acquire(self, key: str, rate: float, burst: int) -> Decision:
        """Take one token from ``key``'s bucket."""
        now = self._now()
        if now >= self._next_sweep:
            self._sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [float(burst), now, now]
        tokens, stamp, decision = take(bucket[0], bucket[1], now, rate, burst)
        bucket[0], bucket[1], bucket[2] = tokens, stamp, stamp + (burst - tokens) / rate
        return decision

    def _sweep(self, now: float) -> None:
        # Keys are authenticated client names, so there are only as many as registered
        # clients; sweeping keeps only those seen within the time their bucket takes to refill.
        self._buckets = {key: bucket for key, bucket in self._buckets.items() if bucket[2] > now}
        self._next_sweep = now + self._sweep_seconds

    def __len__(self) -> int:
        """Buckets held (full ones may linger until the next sweep)."""
        return len(self._buckets)

    async def aclose(self) -> None:
        """Nothing to release."""
