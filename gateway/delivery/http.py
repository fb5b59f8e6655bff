"""The HTTP plumbing connectors share: one pooled client per destination, one exchange helper.

    client = destination_client(timeout=30.0, concurrency=4, auth=credentials.httpx_auth())
    response, outcome = await exchange(client, client.build_request("PUT", url, content=body), clock)

``exchange`` turns transport errors into outcomes through ``classify`` and lets any other
exception (a bug) propagate, so the engine dead-letters it with its traceback.
"""

from __future__ import annotations

import httpx

from gateway.connectors.base import DeliveryOutcome
from gateway.delivery.classify import classify
from gateway.delivery.clock import Clock

USER_AGENT = "chw-fhir-gateway-delivery/0.1"


def destination_client(
    *,
    timeout: float,
    concurrency: int,
    auth: httpx.Auth | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """A pooled client for one destination: explicit timeouts, no redirects, bounded pool."""
    return httpx.AsyncClient(
        auth=auth,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        transport=transport,
    )


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
