"""Delivery to an OpenMRS FHIR2 module: server-assigned ids, remembered; no duplicate after a lost answer.

Per job (OpenMRS has no batch or transaction endpoint, so one resource per request, in the
order the engine hands them over: a Patient's compartment is one ordering key, so the
Patient goes before its Encounters, Observations and Tasks):

1. The resource is put in OpenMRS's terms (``OpenMrsProfile``); a reference to a resource
   OpenMRS has not received yet makes the job wait (``Retry``, the link is fine).
2. If OpenMRS already gave it an id (``destination_ids`` in the store): ``PUT`` there.
3. A type the site lets clients create by id (``options.upsert``): ``PUT`` to the gateway's id.
4. Otherwise the store marks "create sent" first, then ``POST``s, then records the id from
   the answer. A job finding that mark had its answer lost: it searches OpenMRS for the
   first copy (``lookup``) and updates it instead of creating another.

ServiceRequests are read-only in OpenMRS: a referral's ServiceRequest succeeds without a
request (its Task carries it). Deletes, and versions ``entered-in-error`` (a visit or reading
taken back at its source), void the OpenMRS object. Refusals (400/422 with an
OperationOutcome) become dead letters with the request and the answer kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import httpx
import orjson

from gateway import jsonio
from gateway.clock import Clock
from gateway.connectors.base import DeliveryOutcome, Job, Permanent, Retry, Success
from gateway.connectors.http import exchange
from gateway.connectors.openmrs.lookup import is_ours, searches
from gateway.connectors.openmrs.profile import SENT_TYPES, OpenMrsProfile, Prepared, Waiting
from gateway.store import is_golden, is_review_task

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
FOLDED = frozenset({"ServiceRequest"})  # read-only in OpenMRS; the referral Task carries them
_GONE = (404, 410)


class OpenMrsConnector:
    """``Connector`` for an OpenMRS FHIR2 module (``kind: fhir``, ``options.profile: openmrs``)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        clock: Clock,
        profile: OpenMrsProfile,
        *,
        upsert: frozenset[str] = frozenset(),
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self.profile = profile
        self.upsert = upsert

    @property
    def destination(self) -> str:
        """The destination's name (the store keeps OpenMRS ids per destination)."""
        return self.profile.destination

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def deliver(self, jobs: Sequence[Job]) -> list[DeliveryOutcome]:
        """One job after the other: OpenMRS takes no batches."""
        return [await self._deliver_one(job) for job in jobs]

    async def _deliver_one(self, job: Job) -> DeliveryOutcome:
        if job.resource_type in FOLDED:
            return Success(detail=f"{job.resource_type} is read-only in OpenMRS; the referral Task carries it")
        if job.resource_type not in SENT_TYPES:
            return Permanent(
                reason="not_supported", detail=f"this profile does not write {job.resource_type} to OpenMRS"
            )
        if job.resource_type == "Task" and job.op != "delete" and is_review_task(job.resource()):
            return Success(detail="an identity review Task: the gateway's own worklist, not an OpenMRS order")
        if job.resource_type == "Patient" and job.op != "delete" and is_golden(job.resource()):
            # OpenMRS holds each source record; a golden record would be one more patient for the
            # same person, with the records' own identifiers.
            return Success(detail="a golden record: OpenMRS holds the person's source records")
        if job.op == "delete" or job.resource().get("status") == "entered-in-error":
            # OpenMRS keeps no encounter status (FHIR2 answers "unknown" whatever was sent), and
            # voiding is how it takes back what was entered in error: a retraction voids.
            return await self._delete(job)
        prepared = await anyio.to_thread.run_sync(self.profile.prepare, job)
        if isinstance(prepared, Waiting):
            return Retry(None, "waiting_for_reference", link_ok=True)
        if not isinstance(prepared, Prepared):
            return Permanent(reason=prepared.reason, detail=prepared.detail)
        if prepared.remote_id is not None:
            return await self._update(job, prepared.body, prepared.remote_id)
        if job.resource_type in self.upsert:
            outcome = await self._put(job, prepared.body, job.resource_id)
            if isinstance(outcome, Success):
                await self._remember(job.ref, job.resource_id)
            return outcome
        if prepared.pending:
            found = await self._find(job.resource_type, prepared.body)
            if isinstance(found, Retry | Permanent):
                return found
            if found is not None:
                await self._remember(job.ref, found)
                return await self._put(job, prepared.body, found)
        return await self._create(job, prepared.body)

    async def _create(self, job: Job, body: dict[str, Any]) -> DeliveryOutcome:
        await anyio.to_thread.run_sync(self.profile.store.set_destination_id, self.destination, job.ref, None)
        response, outcome = await self._send(job, "POST", f"{self.base_url}/{job.resource_type}", body)
        if response is None or not isinstance(outcome, Success):
            return outcome
        remote = _created_id(response, job.resource_type)
        if remote is None:
            return Permanent(reason="no_id_assigned", detail="OpenMRS answered the create without the new id")
        await self._remember(job.ref, remote)
        return Success(detail=f"{job.resource_type}/{remote}")

    async def _update(self, job: Job, body: dict[str, Any], remote: str) -> DeliveryOutcome:
        """``PUT`` to the object OpenMRS made; if it is gone there (404/410), forget it, so a replay creates it anew."""
        outcome = await self._put(job, body, remote)
        if isinstance(outcome, Permanent) and outcome.reason in ("http_404", "http_410"):
            await anyio.to_thread.run_sync(self.profile.store.forget_destination_id, self.destination, job.ref)
            detail = f"{job.resource_type}/{remote} is no longer in OpenMRS; replaying this creates it again"
            return Permanent(reason=outcome.reason, request=outcome.request, response=outcome.response, detail=detail)
        return outcome

    async def _put(self, job: Job, body: dict[str, Any], remote: str) -> DeliveryOutcome:
        url = f"{self.base_url}/{job.resource_type}/{quote(remote, safe='')}"
        _, outcome = await self._send(job, "PUT", url, {**body, "id": remote})
        return Success(detail=f"{job.resource_type}/{remote}") if isinstance(outcome, Success) else outcome

    async def _delete(self, job: Job) -> DeliveryOutcome:
        known = await anyio.to_thread.run_sync(self.profile.store.destination_ids, self.destination, [job.ref])
        remote = known.get(job.ref)
        if remote is None and job.resource_type in self.upsert:
            remote = job.resource_id
        if remote is None:
            return Success(detail="never created in OpenMRS")
        url = f"{self.base_url}/{job.resource_type}/{quote(remote, safe='')}"
        response, outcome = await self._send(job, "DELETE", url, None)
        if isinstance(outcome, Success) or (response is not None and response.status_code in _GONE):
            await anyio.to_thread.run_sync(self.profile.store.forget_destination_id, self.destination, job.ref)
            return Success(detail=f"{job.resource_type}/{remote} voided")
        return outcome

    async def _find(self, rtype: str, body: dict[str, Any]) -> str | Retry | Permanent | None:
        """The id of the copy an unconfirmed create made, if OpenMRS has it."""
        for params in searches(rtype, body):
            request = self.client.build_request(
                "GET", f"{self.base_url}/{rtype}", params=params, headers={"Accept": FHIR_JSON}
            )
            response, outcome = await exchange(self.client, request, self.clock)
            if isinstance(outcome, Retry | Permanent):
                return outcome
            assert response is not None
            bundle = jsonio.loads(response.content)
            for entry in bundle.get("entry") or []:
                candidate = entry.get("resource") or {}
                if candidate.get("id") and is_ours(rtype, body, candidate):
                    return str(candidate["id"])
        if not searches(rtype, body):
            logger.warning(
                "openmrs %s: a %s create was not confirmed and cannot be looked up; sending it again",
                self.destination,
                rtype,
            )
        return None

    async def _send(
        self, job: Job, method: str, url: str, body: dict[str, Any] | None
    ) -> tuple[httpx.Response | None, DeliveryOutcome]:
        headers = {"Accept": FHIR_JSON, "X-Request-Id": job.id}
        content = None
        if body is not None:
            headers["Content-Type"] = FHIR_JSON
            content = jsonio.dumps({"resourceType": job.resource_type, **body})
        request = self.client.build_request(method, url, content=content, headers=headers)
        return await exchange(self.client, request, self.clock)

    async def _remember(self, ref: str, remote: str) -> None:
        await anyio.to_thread.run_sync(self.profile.store.set_destination_id, self.destination, ref, remote)


def _created_id(response: httpx.Response, rtype: str) -> str | None:
    """The id OpenMRS gave: the answer's ``id``, else the ``Location`` header's."""
    try:
        created = jsonio.loads(response.content)
    except orjson.JSONDecodeError:
        created = None
    if isinstance(created, dict) and isinstance(created.get("id"), str) and created["id"]:
        return str(created["id"])
    location = response.headers.get("location") or ""
    marker = f"/{rtype}/"
    if marker in location:
        return location.split(marker, 1)[1].split("/", 1)[0] or None
    return None
