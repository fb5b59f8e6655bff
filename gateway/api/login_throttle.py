"""Failed-attempt throttling of the credential endpoints: the SMART token endpoint and the console's login.

Guessing a credential means many failed attempts, so those are counted: by client address
(both endpoints together) and, at the token endpoint, by the client a request names (so a
guess spread over many addresses is slowed too). Past a limit within the window, attempts
get 429 with ``Retry-After`` before any credential is looked at. Successes count nothing
and reset nothing. The address is the one the access log shows: the peer, or what a trusted
proxy forwarded (uvicorn's ``proxy_headers`` with ``FORWARDED_ALLOW_IPS``); IPv6 addresses
count by their /64, which one subscriber usually holds whole.
"""

from __future__ import annotations

import ipaddress
import math
import time

from starlette.requests import Request

from gateway.clock import Clock
from gateway.settings import LoginThrottleSettings, Settings

from .failure_window import FailureCounter, InProcessCounter

__all__ = ["LoginThrottle", "build_login_throttle", "retry_after_seconds"]


def _address(request: Request) -> str:
    host = request.client.host if request.client else ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:100] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def retry_after_seconds(wait: float) -> int:
    """``Retry-After`` for a wait of ``wait`` seconds: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait))


class LoginThrottle:
    """The limits of one app over one set of failure counts."""

    def __init__(self, settings: LoginThrottleSettings, counter: FailureCounter) -> None:
        self.counter = counter
        self.window = settings.window_seconds
        self._max_failures = settings.max_failures
        self._max_client_failures = settings.max_client_failures

    def keys(self, request: Request, client: str | None = None) -> dict[str, int]:
        """The counts an attempt from ``request`` (naming ``client``, if any) is held to, with their limits."""
        limits = {f"a:{_address(request)}": self._max_failures}
        if client is not None:
            limits[f"c:{client}"] = self._max_client_failures
        return limits

    async def wait(self, limits: dict[str, int]) -> float:
        """Seconds until an attempt held to ``limits`` may go ahead (0: now)."""
        return await self.counter.wait(limits, self.window)

    async def failed(self, limits: dict[str, int]) -> None:
        """Count a failed attempt against each of its counts."""
        await self.counter.failed(list(limits), self.window)

    async def aclose(self) -> None:
        """Release the counter's connections."""
        await self.counter.aclose()


def build_login_throttle(settings: Settings, clock: Clock | None = None) -> LoginThrottle | None:
    """The throttle ``settings`` ask for (None when off), in Redis where the rate limits' buckets are."""
    section = settings.login_throttle
    if not section.enabled:
        return None
    counter: FailureCounter
    redis_url = settings.rate_limit.redis_url
    if redis_url is not None:
        from .failure_window_redis import RedisCounter  # deployments without Redis never import it

        counter = RedisCounter.from_url(redis_url, now=clock.now if clock else time.time)
    else:
        counter = InProcessCounter(now=clock.now if clock else time.monotonic)
    return LoginThrottle(section, counter)
