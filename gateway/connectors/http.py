"""The HTTP exchange every connector makes: send one request, read the answer, classify it.

    response, outcome = await exchange(client, client.build_request("PUT", url, content=body), clock)

``exchange`` turns transport errors into outcomes through ``classify`` and lets any other
exception (a bug) propagate, so the engine dead-letters it with its traceback. The client
comes from the delivery engine, one pooled client per destination.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from gateway.clock import Clock
from gateway.connectors.base import DeliveryOutcome
from gateway.connectors.classify import classify


async def exchange(
    client: httpx.AsyncClient, request: httpx.Request, clock: Clock
) -> tuple[httpx.Response | None, DeliveryOutcome]:
    """Send ``request``; the response (None on a transport error) and what it means."""
    try:
        response = await client.send(request)
        await response.aread()
    except httpx.HTTPError as exc:
        return None, classify(exc, now=clock.now())
    return response, classify(response, now=clock.now())


def wrap_network_backend(transport: Any, wrap: Callable[[Any], Any]) -> bool:
    """Replace the network backend of ``transport``'s connection pool (httpcore's: what opens its
    connections) with ``wrap(backend)``; whether there was one (not for a mock or ASGI transport).
    httpx offers no option for it, so this reaches into its ``AsyncHTTPTransport``, here alone."""
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is None:
        return False
    pool._network_backend = wrap(backend)  # type: ignore[union-attr]
    return True
