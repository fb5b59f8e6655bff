"""Delivery to a FHIR R4 server: a national shared health record, HAPI, OpenMRS, another gateway.

Every write is idempotent, so a job sent twice (at-least-once delivery) has one effect:

* ``mode="id"`` (default): ``PUT [base]/{type}/{id}``: the gateway's ids are the
  destination's ids, an update-as-create on first delivery.
* ``mode="identifier"``: for servers that assign their own ids (OpenMRS), a conditional
  update ``PUT [base]/{type}?identifier=system|value`` on the resource's first
  identifier (falls back to ``mode="id"`` when it has none); the server creates the
  resource once and updates that one afterwards.
* Deletes are ``DELETE [base]/{type}/{id}``; 404 and 410 mean "already gone": success.

With ``batch_size > 1`` the jobs go as one FHIR ``batch`` Bundle and each entry's status
decides its own job. ``meta.versionId``/``meta.lastUpdated`` are the destination's to set,
so they are stripped; the gateway's version travels in ``X-Gateway-Version``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import quote

import httpx
import orjson

from gateway import jsonio
from gateway.clock import Clock
from gateway.connectors.base import DeliveryOutcome, Job, Permanent, Success
from gateway.connectors.classify import classify, record_request, record_response
from gateway.connectors.http import exchange

FHIR_JSON = "application/fhir+json"
GONE_ON_DELETE = (404, 410)  # deleting what is not there has the intended effect


class FhirServerConnector:
    """``Connector`` for a FHIR R4 REST server."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        clock: Clock,
        *,
        mode: Literal["id", "identifier"] = "id",
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self.mode = mode

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def deliver(self, jobs: Sequence[Job]) -> list[DeliveryOutcome]:
        """One request per job, or one batch Bundle for several."""
        if len(jobs) == 1:
            return [await self._deliver_one(jobs[0])]
        return await self._deliver_batch(jobs)

    async def _deliver_one(self, job: Job) -> DeliveryOutcome:
        method, url, body = self._write(job)
        headers = {"Accept": FHIR_JSON, "X-Request-Id": job.id, "X-Gateway-Version": str(job.version)}
        if body is not None:
            headers["Content-Type"] = FHIR_JSON
        request = self.client.build_request(method, url, content=body, headers=headers)
        response, outcome = await exchange(self.client, request, self.clock)
        if response is not None and method == "DELETE" and response.status_code in GONE_ON_DELETE:
            return Success(detail=f"already gone ({response.status_code})")
        if isinstance(outcome, Success) and response is not None:
            return Success(detail=response.headers.get("location") or response.headers.get("etag"))
        return outcome

    def _write(self, job: Job) -> tuple[str, str, bytes | None]:
        """The method, URL and body that write ``job`` idempotently."""
        type_url = f"{self.base_url}/{job.resource_type}"
        if job.op == "delete":
            return "DELETE", f"{type_url}/{quote(job.resource_id, safe='')}", None
        resource = _for_destination(job.resource())
        body = jsonio.dumps(resource)
        condition = self._condition(resource)
        if condition is not None:
            return "PUT", f"{type_url}?{condition}", body
        return "PUT", f"{type_url}/{quote(job.resource_id, safe='')}", body

    def _condition(self, resource: dict[str, Any]) -> str | None:
        if self.mode != "identifier":
            return None
        for identifier in resource.get("identifier") or []:
            system, value = identifier.get("system"), identifier.get("value")
            if system and value:
                token = f"{_escape(system)}|{_escape(value)}"
                return "identifier=" + quote(token, safe="")
        return None

    async def _deliver_batch(self, jobs: Sequence[Job]) -> list[DeliveryOutcome]:
        entries = []
        for job in jobs:
            method, url, body = self._write(job)
            entry: dict[str, Any] = {"request": {"method": method, "url": url[len(self.base_url) + 1 :]}}
            if body is not None:
                entry["resource"] = jsonio.loads(body)
            entries.append(entry)
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": entries}
        request = self.client.build_request(
            "POST",
            self.base_url,
            content=jsonio.dumps(bundle),
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, "X-Request-Id": jobs[0].id},
        )
        response, outcome = await exchange(self.client, request, self.clock)
        if response is None or not isinstance(outcome, Success):
            return [outcome] * len(jobs)
        return self._batch_outcomes(jobs, request, response)

    def _batch_outcomes(
        self, jobs: Sequence[Job], request: httpx.Request, response: httpx.Response
    ) -> list[DeliveryOutcome]:
        try:
            reply = jsonio.loads(response.content)
            entries = reply.get("entry") or []
        except (orjson.JSONDecodeError, AttributeError):
            entries = []
        if not isinstance(entries, list) or len(entries) != len(jobs):
            problem = Permanent(
                reason="bad_batch_response",
                request=record_request(request),
                response=record_response(response),
                detail=f"expected a batch-response with {len(jobs)} entries",
            )
            return [problem] * len(jobs)
        outcomes: list[DeliveryOutcome] = []
        for job, entry in zip(jobs, entries, strict=True):
            status = _entry_status(entry)
            if job.op == "delete" and status in GONE_ON_DELETE:
                outcomes.append(Success(detail=f"already gone ({status})"))
                continue
            outcome = entry.get("response", {}).get("outcome") if isinstance(entry, dict) else None
            entry_response = httpx.Response(status, json=outcome or {}, request=request)
            outcomes.append(classify(entry_response, now=self.clock.now()))
        return outcomes


def _for_destination(resource: dict[str, Any]) -> dict[str, Any]:
    meta = resource.get("meta")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
        resource = {**resource, "meta": meta} if meta else {k: v for k, v in resource.items() if k != "meta"}
    return resource


def _escape(value: str) -> str:
    # FHIR search escaping for token parameters: \ , $ | are escaped with a backslash.
    for char in ("\\", ",", "$", "|"):
        value = value.replace(char, "\\" + char)
    return value


def _entry_status(entry: Any) -> int:
    status = str((entry.get("response") or {}).get("status", "")) if isinstance(entry, dict) else ""
    code = status.split(" ", 1)[0]
    return int(code) if code.isdigit() else 500
