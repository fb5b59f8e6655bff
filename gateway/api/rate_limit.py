"""Per-client rate limits: every request with a valid token takes a token from its client's bucket.

The middleware authenticates the request itself (the handlers then reuse the principal, so
the token is still looked up once) because the limit must hold before any handler work:
reads on the fast route, Bundles, ingest and admin calls alike. A request past its client's
limit gets 429 with ``Retry-After`` (whole seconds, rounded up) and an OperationOutcome
``throttled``. Requests without a valid token are not limited here: the open endpoints
(metadata, health probes) are cheap, probes come often from one address, and behind a
proxy every anonymous client shares its address; the proxy in front is the place for that.
"""

from __future__ import annotations

import math
import time

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.clock import Clock
from gateway.fhir import operation_outcome
from gateway.settings import RateLimitSettings, Settings

from .auth import authenticate
from .negotiation import fhir_response
from .token_bucket import Decision, InProcessLimiter, RateLimiter

__all__ = ["RateLimitMiddleware", "RateLimits", "build_rate_limits"]


class RateLimits:
    """Each client's limit (its own, or the default) over one set of buckets."""

    def __init__(self, settings: RateLimitSettings, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self._default = (settings.requests_per_second, settings.burst)
        self._clients = {
            name: (own.requests_per_second or settings.requests_per_second, own.burst or settings.burst)
            for name, own in settings.clients.items()
        }

    def limit_of(self, client: str) -> tuple[float, int]:
        """Requests per second and burst of ``client``."""
        return self._clients.get(client, self._default)

    async def check(self, client: str) -> Decision:
        """Take a token from ``client``'s bucket."""
        rate, burst = self.limit_of(client)
        return await self.limiter.acquire(client, rate, burst)

    async def aclose(self) -> None:
        """Release the buckets' connections."""
        await self.limiter.aclose()


def build_rate_limits(settings: Settings, clock: Clock | None = None) -> RateLimits | None:
    """The rate limits ``settings`` ask for (None when off): in Redis when ``rate_limit.redis_url`` is set.

    A ``redis://`` queue alone does not move them there: a Redis call on every request costs
    more than a read by id (``bench/rate_limit.py``), which only a deployment of several
    gateway processes sharing one budget should pay.
    """
    section = settings.rate_limit
    if not section.enabled:
        return None
    limiter: RateLimiter
    if section.redis_url is not None:
        from .token_bucket_redis import RedisLimiter  # deployments without Redis never import it

        limiter = RedisLimiter.from_url(section.redis_url, now=clock.now if clock else time.time)
    else:
        limiter = InProcessLimiter(now=clock.now if clock else time.monotonic)
    return RateLimits(section, limiter)


class RateLimitMiddleware:
    """Pure ASGI middleware answering 429 for a client past its limit (``app.state.ctx.limits``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the client's bucket, then pass the request on or answer 429."""
        if scope["type"] == "http":
            limits: RateLimits | None = scope["app"].state.ctx.limits
            if limits is not None:
                request = Request(scope)
                if request.headers.get("authorization"):
                    try:
                        principal = authenticate(request)
                    except Exception:
                        # A bad token (the handler answers 401) or a failing store (the handler
                        # meets it too): the request goes on, and an open endpoint still answers.
                        principal = None
                    if principal is not None:
                        decision = await limits.check(principal.name)
                        if not decision.allowed:
                            await _too_many(decision.retry_after)(scope, receive, send)
                            return
        await self.app(scope, receive, send)


def _too_many(retry_after: float) -> ASGIApp:
    seconds = max(1, math.ceil(retry_after))
    outcome = operation_outcome("throttled", f"too many requests from this client; retry after {seconds} s")
    return fhir_response(outcome, status=429, headers={"Retry-After": str(seconds)})
