"""The HTTP client the engine builds for each destination and hands to its connector.

    client = destination_client(timeout=30.0, concurrency=4, auth=credentials.httpx_auth())

Connectors send through it with ``gateway.connectors.exchange``. Its request hook
``fencing.fence_request`` and its transport's connections (``fencing.fenced_transport``)
refuse to send anything after its delivery's lease hold ended.
"""

from __future__ import annotations

import httpx

from gateway.delivery.fencing import fence_request, fenced_transport

USER_AGENT = "chw-fhir-gateway-delivery/0.1"


def destination_client(
    *,
    timeout: float,
    concurrency: int,
    auth: httpx.Auth | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """A pooled client for one destination: explicit timeouts, no redirects, bounded pool."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(
        auth=auth,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        limits=limits,
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        event_hooks={"request": [fence_request]},
        transport=transport or fenced_transport(limits),
    )
