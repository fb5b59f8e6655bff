"""``GET /metrics`` (Prometheus text format) and the FHIR request-latency middleware.

Who may scrape is ``metrics.access``: ``admin`` (default) needs a token with the ``admin``
or ``metrics`` scope; ``loopback`` also lets clients on 127.0.0.1/::1 in without one (a
Prometheus on the same host or in the same pod); ``public`` lets anyone in. The queue's
figures (depth, lag, circuit, live workers) are read from the queue at each scrape.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.audit import classify
from gateway.api.auth import authenticate
from gateway.api.context import ctx_of
from gateway.delivery import QueueError
from gateway.errors import FhirError
from gateway.metrics import CONTENT_TYPE, QueueFigures, metrics, render

__all__ = ["FhirLatencyMiddleware", "router"]

router = APIRouter(tags=["health"])

LOOPBACK = {"127.0.0.1", "::1"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def scrape(request: Request) -> Response:
    """This process's (or all processes') metrics and the delivery queue's gauges."""
    ctx = ctx_of(request)
    settings = ctx.services.settings.metrics
    if not settings.enabled:
        raise FhirError("metrics are switched off (metrics.enabled)", status=404, code="not-found")
    client = request.client.host if request.client else None
    if settings.access == "admin" or (settings.access == "loopback" and client not in LOOPBACK):
        principal = authenticate(request)
        if not (principal.has("admin") or principal.has("metrics")):
            raise FhirError("this needs the 'metrics' or 'admin' scope", status=403, code="forbidden")
    rows: list[QueueFigures] = []
    delivery = ctx.services.delivery
    if delivery is not None:
        try:
            for row in await delivery.admin.status():
                s = row.stats
                rows.append(QueueFigures(
                    row.name, s.depth, s.oldest_pending_age, s.in_flight, s.retrying, s.dead, s.circuit, s.paused,
                    row.lag_changes, row.lag_seconds, row.workers_alive,
                ))  # fmt: skip
        except QueueError:
            rows = []  # the queue is down: the process's own metrics still help
    return Response(render(rows), media_type=CONTENT_TYPE)


class FhirLatencyMiddleware:
    """Times each ``/fhir`` request into ``gateway_fhir_request_seconds`` by interaction and status class."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The labelled children, looked up once each: ``labels()`` validates and locks on every call.
        self._histogram: Any = None
        self._children: dict[tuple[str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request; record its duration if it was a FHIR interaction."""
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith("/fhir"):
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            kind = classify(scope["method"], path)
            self._child(kind[0] if kind is not None else "other", status // 100).observe(time.perf_counter() - start)

    def _child(self, interaction: str, status_class: int) -> Any:
        histogram = metrics().fhir_request_seconds
        if histogram is not self._histogram:  # a new registry (tests make one): forget the old children
            self._histogram, self._children = histogram, {}
        key = (interaction, status_class)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = histogram.labels(interaction, f"{status_class}xx")
        return child
