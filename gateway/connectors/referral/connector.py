"""Delivering referral outcomes to CHT (a report document) and CommCare (a form with a case update).

Both connectors take Task changes, skip those that are not a referral of their mapping set
(``meta.source`` is another system; a Task without one, as an EMR that rebuilds what it read
PUTs it, goes by the Task's stored version from its source, else its focus ServiceRequest's),
or for which no outbound mapping fires (a Task still waiting, for example), and send one
request per job. A Task the facility took back (deleted, or ``entered-in-error``) has the CHT
connector delete the reports its earlier versions made, and the CommCare connector (forms cannot
be deleted through the receiver) submit the outcome ``entered-in-error``, which the shipped
outbound mapping writes into the case (``referral_status``), so the CHW's follow-up is called
off. Each request is
idempotent on the destination's side through ``%outcome_id``: CouchDB answers a repeated
``_id`` with 409 (the stored document is read: it is a repeat if it says what we send, else
the same outcome changed since, and it is updated with its ``_rev``), CommCare treats a
repeated ``instanceID`` as the same form.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import httpx

from gateway import jsonio
from gateway.clock import Clock
from gateway.connectors.base import DeliveryOutcome, Job, Permanent, Retry, Success
from gateway.connectors.classify import record_request, record_response
from gateway.connectors.http import exchange
from gateway.connectors.referral.config import ReturnOptions
from gateway.connectors.referral.context import outcome_context, reference_parts, with_origin
from gateway.connectors.referral.xform import to_xform
from gateway.mapping import MappingError, OutboundMapping, outcome_id, render_outcome
from gateway.store import ResourceStore

__all__ = ["ChtConnector", "CommCareConnector"]

_NATURE = re.compile(rb'nature="([a-z_]+)"')
_TAKE_BACK_HISTORY = 100  # versions of a Task read back for the outcomes they sent
#: An outcome naming outputs (the visit's Encounter, a Condition) the store does not hold yet waits
#: this many tries, this many seconds apart, for them: an EMR may PUT the Task before it POSTs the
#: Encounter. Past them it goes without (an EMR may name its own ids, which never come).
_OUTPUT_WAITS = 3
_OUTPUT_WAIT_SECONDS = 10.0


class _ReturnConnector:
    """What both kinds share: pick the jobs, build the context, render the payload."""

    waiting_reason = "patient_unknown"  # the Retry reason while the Task's Patient has not arrived

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        clock: Clock,
        *,
        store: ResourceStore,
        system: str,
        mappings: list[OutboundMapping],
        options: ReturnOptions,
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self.store = store
        self.system = system
        self.mappings = mappings
        self.options = options

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def deliver(self, jobs: Sequence[Job]) -> list[DeliveryOutcome]:
        """One request per job that has an outcome to send."""
        return [await self._deliver_one(job) for job in jobs]

    async def _deliver_one(self, job: Job) -> DeliveryOutcome:
        if job.resource_type != "Task":
            return Success("not a referral outcome: nothing sent")
        if job.op == "delete" or job.resource().get("status") == "entered-in-error":
            # The facility took the outcome back (recorded on the wrong referral).
            return await self._take_back(job)
        return await self._deliver_task(job.resource(), attempts=job.attempts)

    async def _deliver_task(self, task: dict[str, Any], attempts: int | None = None) -> DeliveryOutcome:
        """Render and send the outcome of one version of a Task (if it is this app's and a mapping fires)."""
        source = (task.get("meta") or {}).get("source")
        if source is not None and source != self.system:
            return Success("a referral of another source: nothing sent")
        context = await asyncio.to_thread(outcome_context, self.store, task)
        if source is None or ("patient" not in context and task.get("for")):
            # An EMR's copy in its own terms (no meta, its own patient id): the source's version decides.
            completed = await asyncio.to_thread(with_origin, self.store, task)
            if completed is not None:
                task = completed
                source = task["meta"]["source"]
                if source != self.system:
                    return Success("a referral of another source: nothing sent")
                context = await asyncio.to_thread(outcome_context, self.store, task)
        if source is None and ((context.get("request") or {}).get("meta") or {}).get("source") != self.system:
            # An EMR that rebuilds the Task it read (a PUT without meta) drops meta.source; the
            # referral it fulfils still says which app asked.
            return Success("a referral of another source: nothing sent")
        try:
            payload = render_outcome(self.mappings, context)
        except MappingError as exc:
            return Permanent(reason="mapping_error", detail=str(exc))
        if payload is None:
            return Success("no outbound mapping fires for this state: nothing sent")
        patient = reference_parts(task.get("for"))
        if patient is not None and "patient" not in context:
            # The outcome names the CHW's patient (CHT's patient_uuid, CommCare's case): without the
            # Patient it would reach the app tied to nobody. A visit may come before its person's
            # registration: wait for it, as for a record that comes later (the link is fine).
            found = await asyncio.to_thread(self.store.read, *patient)
            if found is not None and found.deleted:
                return Permanent(reason="patient_deleted",
                                 detail=f"{patient[0]}/{patient[1]} was deleted: the outcome would name no patient")
            return Retry(delay=None, reason=self.waiting_reason, link_ok=True)
        if attempts is not None and attempts < _OUTPUT_WAITS and await asyncio.to_thread(self._outputs_missing, task):
            # Sent now, the CHW would hear of no visit date nor diagnosis, and nothing sends it again.
            return Retry(delay=_OUTPUT_WAIT_SECONDS, reason="output_unknown", link_ok=True)
        return await self._send(payload)

    def _outputs_missing(self, task: dict[str, Any]) -> bool:
        """Whether an output the Task names (``Type/id``) is not in the store yet (deleted ones are there)."""
        for output in task.get("output") or ():
            parts = reference_parts(output.get("valueReference")) if isinstance(output, dict) else None
            if parts is not None and self.store.read(*parts) is None:
                return True
        return False

    async def _send(self, payload: dict[str, Any]) -> DeliveryOutcome:
        raise NotImplementedError

    async def _take_back(self, job: Job) -> DeliveryOutcome:
        """Withdraw what earlier versions of a Task sent (nothing where the app has no such way)."""
        return Success("a Task taken back: nothing sent")

    def _task_versions(self, task_id: str) -> list[dict[str, Any]]:
        """The Task's stored versions that are not deletions, newest first (by version: versions written
        within one millisecond tie on the history's order)."""
        versions, _ = self.store.history("Task", task_id, count=_TAKE_BACK_HISTORY)
        return [jsonio.loads(v.content) for v in sorted(versions, key=lambda v: -v.version) if not v.deleted]

    def _sent_ids(self, task_id: str) -> list[str]:
        """The outcome ids earlier versions of the Task of this source may have sent (from the store's history)."""
        bodies = self._task_versions(task_id)
        if not any((body.get("meta") or {}).get("source") == self.system for body in bodies):
            return []  # not a referral of this app
        return list(dict.fromkeys(outcome_id(self.system, {"task": body}) for body in bodies))


class ChtConnector(_ReturnConnector):
    """``kind: cht-api``: PUT the report document to ``/{database}/{_id}``; 409: there already, updated if changed."""

    async def _send(self, payload: dict[str, Any]) -> DeliveryOutcome:
        doc_id = payload.get("_id")
        if not isinstance(doc_id, str) or not doc_id or doc_id.startswith("_"):
            return Permanent(reason="mapping_error", detail="the outbound CHT payload needs an _id (use %outcome_id)")
        url = f"{self.base_url}/{self.options.database}/{doc_id}"
        request = self.client.build_request(
            "PUT", url, content=jsonio.dumps(payload), headers={"Content-Type": "application/json"}
        )
        response, outcome = await exchange(self.client, request, self.clock)
        if response is not None and response.status_code == 409:
            return await self._update(url, doc_id, payload)
        return Success(doc_id) if isinstance(outcome, Success) else outcome

    async def _update(self, url: str, doc_id: str, payload: dict[str, Any]) -> DeliveryOutcome:
        """The outcome's document is there already: a repeat, or the same outcome changed since.

        The id names the Task and its status, so a facility that adds the visit to a Task it
        completed earlier (same status) writes the same id again: the stored report is updated
        (with its ``_rev``, keeping what CHT added to it) unless it already says what we send.
        """
        response, outcome = await exchange(self.client, self.client.build_request("GET", url), self.clock)
        if response is None or not isinstance(outcome, Success):
            return outcome
        try:
            stored = jsonio.loads(response.content)
        except ValueError:
            stored = None
        if not isinstance(stored, dict) or not isinstance(stored.get("_rev"), str):
            return Retry(delay=None, reason="cht_unreadable_document")
        if all(stored.get(key) == value for key, value in payload.items()):
            return Success(f"{doc_id} was already stored (a repeat)")
        request = self.client.build_request(
            "PUT", url, content=jsonio.dumps({**stored, **payload}), headers={"Content-Type": "application/json"}
        )
        response, outcome = await exchange(self.client, request, self.clock)
        if response is not None and response.status_code == 409:
            return Retry(delay=None, reason="cht_conflict")  # written in between: read it again
        return Success(f"{doc_id} updated") if isinstance(outcome, Success) else outcome


    async def _take_back(self, job: Job) -> DeliveryOutcome:
        """Delete the reports earlier versions made (CouchDB's ``DELETE`` with the document's ``_rev``):
        CHT replicates the deletion, and the CHW's follow-up task on the report goes with it."""
        ids = await asyncio.to_thread(self._sent_ids, job.resource_id)
        deleted = 0
        for doc_id in ids:
            url = f"{self.base_url}/{self.options.database}/{doc_id}"
            response, outcome = await exchange(self.client, self.client.build_request("GET", url), self.clock)
            if response is not None and response.status_code == 404:
                continue  # never sent (no mapping fired for that state), or deleted already
            if response is None or not isinstance(outcome, Success):
                return outcome
            rev = jsonio.loads(response.content).get("_rev")
            request = self.client.build_request("DELETE", url, params={"rev": rev})
            response, outcome = await exchange(self.client, request, self.clock)
            if response is not None and response.status_code == 404:
                continue
            if response is not None and response.status_code == 409:
                return Retry(delay=None, reason="cht_conflict")  # written in between: read it again
            if not isinstance(outcome, Success):
                return outcome
            deleted += 1
        return Success(f"taken back: {deleted} report(s) deleted")


class CommCareConnector(_ReturnConnector):
    """``kind: commcare-api``: POST the form XML to the receiver; a repeated instanceID is the same form."""

    waiting_reason = "case_unknown"

    async def _take_back(self, job: Job) -> DeliveryOutcome:
        """Send the Task as ``entered-in-error`` when an earlier version sent an outcome: the form
        updates the case (CommCare cannot delete a form through its receiver), so the CHW's
        follow-up of the wrong outcome is called off. Its instanceID is the take-back's own."""
        earlier = await asyncio.to_thread(self._sent_versions, job.resource_id)
        if not earlier:
            return Success("a Task taken back that sent no outcome: nothing sent")
        newest = job.resource() if job.op != "delete" else {}
        taken = {**earlier[0], **newest, "status": "entered-in-error"}
        return await self._deliver_task(taken)

    def _sent_versions(self, task_id: str) -> list[dict[str, Any]]:
        """Earlier versions of the Task (newest first) if any of them had an outcome for this app to send."""
        bodies = self._task_versions(task_id)
        seen: set[tuple[str, str]] = set()
        for body in bodies:
            if body.get("status") == "entered-in-error":
                continue
            state = (str(body.get("status")), jsonio.dumps(body.get("businessStatus")).decode())
            if state in seen:
                continue
            seen.add(state)
            completed = with_origin(self.store, body) or body
            if (completed.get("meta") or {}).get("source") not in (self.system, None):
                return []
            try:
                if render_outcome(self.mappings, outcome_context(self.store, completed)) is not None:
                    return bodies
            except MappingError:
                continue
        return []

    async def _send(self, payload: dict[str, Any]) -> DeliveryOutcome:
        case = payload.get("case")
        if isinstance(case, dict) and not case.get("case_id"):
            # The Patient (from case forwarding) has not arrived yet: wait for it, as for a
            # record that comes later; the link is fine, so the breaker does not count it.
            return Retry(delay=None, reason="case_unknown", link_ok=True)
        meta = dict(payload.get("meta") or {})
        meta.setdefault("deviceID", self.options.device_id)
        meta.setdefault("username", self.options.username)
        if self.options.user_id:
            meta.setdefault("userID", self.options.user_id)
        try:
            body = to_xform({**payload, "meta": meta})
        except ValueError as exc:
            return Permanent(reason="mapping_error", detail=str(exc))
        path = f"receiver/{self.options.app_id}/" if self.options.app_id else "receiver/api/"
        url = f"{self.base_url}/a/{self.options.domain}/{path}"
        request = self.client.build_request("POST", url, content=body, headers={"Content-Type": "text/xml"})
        response, outcome = await exchange(self.client, request, self.clock)
        if response is None or not isinstance(outcome, Success):
            return outcome
        nature = _NATURE.search(response.content)
        if nature is not None and nature.group(1) != b"submit_success":
            # OpenRosa 2.0 answers 201 even when the form was received but not processed.
            return Permanent(reason=f"commcare_{nature.group(1).decode()}", request=record_request(request),
                             response=record_response(response))  # fmt: skip
        return Success(str(meta["instanceID"]))
