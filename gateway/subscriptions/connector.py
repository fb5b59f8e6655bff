"""The ``rest-hook`` connector: posts one event's notification Bundle to its subscription's endpoint
or, for a classic R4 criteria-based subscription, does what R4's rest-hook says: a ``POST`` without
a body to the endpoint when ``channel.payload`` is absent, else a ``PUT`` of the resource (the
version that changed) to ``[endpoint]/[type]/[id]``.

The delivery engine hands it jobs of the ``subscriptions`` destination (one per event, ordering
key ``Subscription/<id>``). The endpoint, headers, payload content and timeout are read from
the subscription when the job is sent, so a subscription updated or removed since the event
was queued is honoured (a removed, ``off`` or ended one is skipped, the job counted as delivered).
A resource the notification carries is given as the owner may read it now: not at all when the
owner can no longer authenticate, de-identified when its data policy says so.

What a dead letter keeps of a send never holds the subscriber's ``channel.header`` values (its own
credentials, under whatever names it chose): those headers are kept as ``[redacted]`` and their
values replaced by ``***`` wherever else they appear (an endpoint may echo the request).

A failed send counts against the subscription (``error`` after ``error_after`` in a row); its
retry is marked ``link_ok`` so one broken subscriber never opens the circuit breaker that all
subscriptions share. A success moves an ``error`` subscription back to ``active``.

Before each send the endpoint is judged again where its host resolves now (``EndpointGuard``): a
refused address makes the job a dead letter (``endpoint_refused``) without a request. Redirects
are not followed (the engine's client), so a 3xx cannot lead anywhere else.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import httpx

from gateway import jsonio
from gateway.clock import Clock
from gateway.connectors import DeliveryOutcome, Job, Permanent, Redaction, Retry, Success, exchange
from gateway.fhir import content_as_policy_gives
from gateway.search import DataPolicy, RowFilter, SearchRegistry
from gateway.store import Store, StoredResource, SubscriptionRecord
from gateway.subscriptions.access import owner_access
from gateway.subscriptions.bundles import Event, notification_bundle
from gateway.subscriptions.endpoints import EndpointGuard
from gateway.subscriptions.pinning import EndpointRefused
from gateway.subscriptions.spec import SubscriptionSpec
from gateway.subscriptions.stored import spec_of, view_of


class RestHookConnector:
    """``Connector`` for subscription notifications (see the module docstring)."""

    def __init__(
        self, client: httpx.AsyncClient, store: Store, clock: Clock, *, base_url: str, error_after: int,
        default_timeout: float, registry: SearchRegistry, guard: EndpointGuard,
        policies: Mapping[str, DataPolicy] | None = None,
    ) -> None:
        self.client = client
        self.guard = guard
        self.registry = registry
        self.policies = dict(policies or {})
        self.store = store
        self.clock = clock
        self.base_url = base_url
        self.error_after = error_after
        self.default_timeout = default_timeout

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def deliver(self, jobs: Sequence[Job]) -> list[DeliveryOutcome]:
        """Send each job's notification; one outcome per job."""
        return [await self._one(job) for job in jobs]

    async def _one(self, job: Job) -> DeliveryOutcome:
        sid = job.key.removeprefix("Subscription/")
        record = await asyncio.to_thread(self.store.subscription_get, sid)
        if record is None or record.status == "off":
            return Success(detail="the subscription was removed or switched off; not sent")
        spec = spec_of(record)
        if spec.end is not None and spec.end.timestamp() <= self.clock.now():
            return Success(detail="the subscription has ended; not sent")
        stored = None
        if spec.content == "full-resource" and job.op != "delete":
            access = await asyncio.to_thread(owner_access, self.store, record, self.policies, self.registry,
                                             datetime.now(UTC))
            if access is None:
                return Success(detail="the owner can no longer authenticate; not sent")
            # Checked again at sending, not only when the change was matched: scopes narrowed or a
            # data policy set in between (or a queue that waited hours) must not let a resource out.
            if not access.can_read(job.resource_type):
                return Success(detail=f"the owner may no longer read {job.resource_type}; not sent")
            stored = await asyncio.to_thread(self.store.vread, job.resource_type, job.resource_id, job.version)
            if stored is not None and access.policy is not None and not await asyncio.to_thread(
                self._shown, access.policy, stored
            ):
                return Success(detail="the owner's data policy does not show this resource now; not sent")
            owner = access.current
            if stored is not None and stored.content:
                # The owner's data policy: it is given resources here as on a read (de-identified,
                # without the identity matcher's links).
                stored = dataclasses.replace(stored, content=content_as_policy_gives(
                    stored.content, limits_rows=owner.limits_rows, deidentified=owner.deidentified))
        if spec.classic and spec.payload is not None and (stored is None or not stored.content):
            return Success(detail="the resource version is no longer stored; not sent")
        timeout = float(spec.timeout or self.default_timeout)
        if spec.classic:
            request = self._r4_request(spec, job, stored, timeout)
        else:
            request = self._bundle_request(record, spec, job, stored, timeout)
        refused = await self.guard.send_refusal(str(request.url))
        if refused is not None:
            # Where the name resolves now counts, not where it did at create (DNS rebinding).
            outcome: DeliveryOutcome = Permanent(reason="endpoint_refused", detail=refused)
        else:
            try:
                _, outcome = await exchange(self.client, request, self.clock)
            except EndpointRefused as exc:  # where the connection found the name to resolve
                outcome = Permanent(reason="endpoint_refused", detail=str(exc))
        outcome = _redaction(spec).scrub(outcome)
        await asyncio.to_thread(self._note, record, outcome)
        if isinstance(outcome, Retry):
            return dataclasses.replace(outcome, link_ok=True)
        return outcome

    def _shown(self, policy: RowFilter, stored: StoredResource) -> bool:
        """Whether ``policy`` shows the resource as it is now and this version of it."""
        if stored.id not in self.store.visible(policy, stored.type, [stored.id]):
            return False
        return bool(self.store.visible_versions(policy, [stored]))

    def _r4_request(
        self, spec: SubscriptionSpec, job: Job, stored: StoredResource | None, timeout: float
    ) -> httpx.Request:
        """R4 core rest-hook: a POST without a body (no payload), or a PUT of the resource to
        ``[endpoint]/[type]/[id]``."""
        if spec.payload is None or stored is None:
            return self.client.build_request("POST", spec.endpoint, headers=dict(spec.headers), timeout=timeout)
        url = f"{spec.endpoint.rstrip('/')}/{job.resource_type}/{job.resource_id}"
        return self.client.build_request("PUT", url, content=stored.content, timeout=timeout,
                                         headers={**spec.headers, "Content-Type": "application/fhir+json"})

    def _bundle_request(
        self, record: SubscriptionRecord, spec: SubscriptionSpec, job: Job, stored: StoredResource | None,
        timeout: float,
    ) -> httpx.Request:
        """Backport IG: a POST of the event's notification Bundle."""
        info = jsonio.loads(job.payload)
        resource = jsonio.loads(stored.content) if stored is not None and stored.content else None
        event = Event(number=int(info["event"]), at=float(info["at"]), resource_type=job.resource_type,
                      resource_id=job.resource_id, op=job.op, resource=resource)
        bundle = notification_bundle(view_of(record), "event-notification", self.base_url, self.clock.now(), [event])
        return self.client.build_request("POST", spec.endpoint, content=jsonio.dumps(bundle), timeout=timeout,
                                         headers={**spec.headers, "Content-Type": "application/fhir+json"})

    def _note(self, record: SubscriptionRecord, outcome: DeliveryOutcome) -> None:
        """Record the send against the subscription's status (runs on a worker thread)."""
        now = datetime.now(UTC)
        if isinstance(outcome, Success):
            if record.status != "active" or record.failures:
                self.store.subscription_set_status(record.sid, "active", failures=0, when=now,
                                                   only_from=("active", "error", "requested"))
            return
        reason = getattr(outcome, "reason", "failed")
        self.store.subscription_note_failure(record.sid, f"notification failed: {reason}", self.error_after, now)


#: Header values shorter than this are not searched for in bodies (``X-Tenant: a`` would star every "a").
_MIN_SECRET = 4


def _redaction(spec: SubscriptionSpec) -> Redaction:
    """The subscriber's own headers, to be kept out of dead letters like a destination's credentials."""
    secrets = {value for value in spec.headers.values() if len(value) >= _MIN_SECRET}
    # "Bearer abc…": the token alone too, should the subscriber echo it without its scheme.
    secrets |= {part for value in spec.headers.values() for part in value.split() if len(part) >= 8}
    return Redaction(frozenset(name.lower() for name in spec.headers),
                     tuple(sorted(secrets, key=len, reverse=True)))
