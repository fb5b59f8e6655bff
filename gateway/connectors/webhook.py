"""Delivery to a plain HTTP endpoint: POST the resource, or a Bundle of several.

One job (``batch_size: 1``, the default) is posted as the resource itself; a delete is
posted as ``{"resourceType": T, "id": id}`` with ``X-Gateway-Event: delete``. Several jobs
are posted as one FHIR ``batch`` Bundle (``PUT``/``DELETE`` entries), and the response
decides for all of them.

Headers let the receiver make its side idempotent, since delivery is at-least-once:
``X-Gateway-Delivery-Id`` is the same on every retry of a job (for a Bundle, of its first
job), ``X-Gateway-Event`` is create/update/delete and ``X-Gateway-Resource`` is
``Type/id/_history/version``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from gateway import jsonio
from gateway.clock import Clock
from gateway.connectors.base import DeliveryOutcome, Job
from gateway.connectors.http import exchange


class WebhookConnector:
    """``Connector`` POSTing to one URL."""

    def __init__(self, client: httpx.AsyncClient, url: str, clock: Clock) -> None:
        self.client = client
        self.url = url
        self.clock = clock

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def deliver(self, jobs: Sequence[Job]) -> list[DeliveryOutcome]:
        """POST the job (or a Bundle of the jobs); one outcome for all of them."""
        first = jobs[0]
        headers = {
            "Content-Type": "application/fhir+json",
            "X-Gateway-Delivery-Id": first.id,
        }
        if len(jobs) == 1:
            headers["X-Gateway-Event"] = first.op
            headers["X-Gateway-Resource"] = f"{first.ref}/_history/{first.version}"
            body = jsonio.dumps(first.resource() if first.op != "delete" else _tombstone(first))
        else:
            body = jsonio.dumps(_bundle(jobs))
        request = self.client.build_request("POST", self.url, content=body, headers=headers)
        _, outcome = await exchange(self.client, request, self.clock)
        return [outcome] * len(jobs)


def _tombstone(job: Job) -> dict[str, Any]:
    return {"resourceType": job.resource_type, "id": job.resource_id}


def _bundle(jobs: Sequence[Job]) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for job in jobs:
        if job.op == "delete":
            entries.append({"request": {"method": "DELETE", "url": job.ref}})
        else:
            entries.append({"resource": job.resource(), "request": {"method": "PUT", "url": job.ref}})
    return {"resourceType": "Bundle", "type": "batch", "entry": entries}
