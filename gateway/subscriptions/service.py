"""Subscriptions as the API and the delivery engine use them: create (with the handshake), read,
update, delete, ``$status``, heartbeats, and the delivery parts (destination, connector, feed).

Only the owner (the API client that created a subscription) sees or changes it; another
client's subscription is as good as unknown (404). Handshakes and heartbeats are posted
directly (they carry no event: losing one loses nothing); events go through the delivery queue.
A classic R4 criteria-based subscription has neither (R4 core): it is ``active`` once accepted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway import jsonio
from gateway.auth import Principal
from gateway.clock import Clock, SystemClock
from gateway.connectors import Connector, Success, exchange
from gateway.delivery import DeliveryQueue, DestinationConfig
from gateway.errors import FhirError, invalid, not_found
from gateway.search import DataPolicy, QueryParser, SearchRegistry
from gateway.store import Store, SubscriptionRecord
from gateway.subscriptions.bundles import notification_bundle, status_bundle
from gateway.subscriptions.config import SubscriptionSettings, subscription_destination
from gateway.subscriptions.connector import RestHookConnector
from gateway.subscriptions.criteria import check_filters, check_owner
from gateway.subscriptions.endpoints import EndpointGuard, Resolver
from gateway.subscriptions.feed import SubscriptionFeed
from gateway.subscriptions.pinning import EndpointRefused, pin_client, pin_transport
from gateway.subscriptions.spec import SubscriptionSpec, read_spec
from gateway.subscriptions.stored import spec_of, view_of

log = logging.getLogger(__name__)

_HEARTBEAT_TASK = "subscription-heartbeats"


class SubscriptionService:
    """Every operation on subscriptions (see the module docstring)."""

    def __init__(
        self, store: Store, parser: QueryParser, registry: SearchRegistry, settings: SubscriptionSettings, *,
        base_url: str, policies: Mapping[str, DataPolicy] | None = None, clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None, resolve: Resolver | None = None,
    ) -> None:
        self.store = store
        self.parser = parser
        self.registry = registry
        self.settings = settings
        self.base_url = base_url.rstrip("/")
        self.policies = dict(policies or {})
        self.clock = clock or SystemClock()
        self.transport = transport
        self.guard = EndpointGuard(settings, resolve)
        self._client: httpx.AsyncClient | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self._holder = f"{socket.gethostname()}:{os.getpid()}"

    # -- the delivery engine's parts ---------------------------------------------------------
    def destination(self) -> DestinationConfig:
        """The delivery destination carrying every notification (never coalesced: each event counts)."""
        return subscription_destination(self.settings, self.base_url)

    def connector(self, destination: DestinationConfig, *, client: httpx.AsyncClient, clock: Clock) -> Connector:
        """The ``subscriptions`` kind's connector (a ``ConnectorFactory``)."""
        pin_client(client, self.guard)  # connections go to the addresses judged, not to a second lookup's
        return RestHookConnector(client, self.store, clock, base_url=self.base_url,
                                 error_after=self.settings.error_after, default_timeout=destination.timeout,
                                 registry=self.registry, policies=self.policies, guard=self.guard)

    def follower(self, queue: DeliveryQueue) -> SubscriptionFeed:
        """The change-feed follower that queues notifications (a ``FollowerFactory``)."""
        return SubscriptionFeed(self.store, queue, self.parser, self.registry, self.policies, self.clock)

    # -- the FHIR API -----------------------------------------------------------------------
    def check(self, resource: Any, principal: Principal | None = None) -> SubscriptionSpec:
        """A client's Subscription, checked (400 naming the element; 403 when ``principal`` may not
        read what a classic criteria watches)."""
        if not isinstance(resource, dict):
            raise invalid("the body must be a Subscription", ["Subscription"])
        spec = read_spec(resource, self.parser, allow_http=self.settings.allow_http,
                         min_heartbeat=self.settings.min_heartbeat_period)
        host = urlsplit(spec.endpoint).hostname or ""
        if not self.settings.endpoint_allowed(host):
            # The handshake and notifications go wherever the client says: not to internal services.
            raise FhirError(f"the endpoint host {host[:100]!r} is not one subscriptions may notify"
                            " (subscriptions.endpoint_hosts)", status=400, code="invalid",
                            expression=["Subscription.channel.endpoint"])
        refused = self.guard.refusal(spec.endpoint)
        if refused is not None:
            # The metadata service, the gateway's own network, ...: not even a handshake goes there.
            raise FhirError(f"{refused} (unless subscriptions.endpoint_hosts lists it)", status=400,
                            code="invalid", expression=["Subscription.channel.endpoint"])
        if spec.classic and principal is not None:
            check_owner(spec.topic, principal, self.parser)
        elif principal is not None:
            # A notification tells its owner the filter matched: a filter is a search like any other.
            check_filters(spec.topic, spec.filters, principal, self.parser)
        return spec

    async def create(self, principal: Principal, resource: dict[str, Any]) -> SubscriptionRecord:
        """Store a new subscription as ``requested`` and handshake (then ``active``, or ``error``)."""
        spec = self.check(resource, principal)
        live = await asyncio.to_thread(self.store.subscription_list, owner=principal.name, live=True)
        if len(live) >= self.settings.max_per_client:
            raise FhirError(f"a client may hold at most {self.settings.max_per_client} live subscriptions",
                            status=422, code="business-rule")
        now = datetime.now(UTC)
        start = await asyncio.to_thread(self.store.last_change_seq)
        record = SubscriptionRecord(
            sid=uuid.uuid4().hex, owner=principal.name, scopes=principal.scopes, content=_content(resource),
            status="requested", start_seq=start, created=now, updated=now,
        )
        await asyncio.to_thread(self.store.subscription_save, record)
        return await self._activate(record, spec)

    async def update(self, principal: Principal, sid: str, resource: dict[str, Any]) -> SubscriptionRecord:
        """Replace a subscription; ``requested``/``active`` handshake again (how a client re-activates one
        in ``error``), ``off`` stops notifications. Its event numbers carry on."""
        record = await self.get(principal, sid)
        if resource.get("id") not in (None, sid):
            raise invalid("the id in the body differs from the id in the URL", ["Subscription.id"])
        spec = self.check(resource, principal)
        updated = replace(record, content=_content(resource), updated=datetime.now(UTC),
                          status="off" if spec.status == "off" else "requested", failures=0, error=None)
        await asyncio.to_thread(self.store.subscription_save, updated)
        if spec.status == "off":
            return updated
        return await self._activate(updated, spec)

    async def get(self, principal: Principal, sid: str) -> SubscriptionRecord:
        """The principal's subscription ``sid`` (404 if unknown or another client's)."""
        record = await asyncio.to_thread(self.store.subscription_get, sid) if sid.isalnum() else None
        if record is None or record.owner != principal.name:
            raise not_found(f"Subscription/{sid[:64]} is not known")
        return record

    async def list(self, principal: Principal) -> list[SubscriptionRecord]:
        """The principal's subscriptions."""
        return await asyncio.to_thread(self.store.subscription_list, owner=principal.name)

    async def delete(self, principal: Principal, sid: str) -> None:
        """Remove a subscription (its queued notifications are skipped)."""
        await self.get(principal, sid)
        await asyncio.to_thread(self.store.subscription_delete, sid)

    def status(self, records: Sequence[SubscriptionRecord]) -> dict[str, Any]:
        """The ``$status`` Bundle of ``records``."""
        return status_bundle([view_of(r) for r in records], self.base_url, self.clock.now())

    # -- handshake and heartbeats -----------------------------------------------------------
    async def _activate(self, record: SubscriptionRecord, spec: SubscriptionSpec) -> SubscriptionRecord:
        """Handshake, then ``active`` or ``error``; a classic R4 one (no handshake in R4 core) is ``active``
        at once, and one whose ``end`` has passed is ``off``."""
        now = datetime.now(UTC)
        if spec.end is not None and spec.end <= now:
            await asyncio.to_thread(self.store.subscription_set_status, record.sid, "off", failures=0, when=now)
            return await asyncio.to_thread(self.store.subscription_get, record.sid) or record
        fresh = await asyncio.to_thread(self.store.subscription_get, record.sid) or record
        problem = None if spec.classic else await self._post(fresh, spec, "handshake", self.settings.handshake_timeout)
        now = datetime.now(UTC)
        if problem is None:
            await asyncio.to_thread(self.store.subscription_set_status, record.sid, "active", failures=0, when=now)
        else:
            await asyncio.to_thread(self.store.subscription_set_status, record.sid, "error", failures=1,
                                    error=f"handshake failed: {problem}", when=now)
        return await asyncio.to_thread(self.store.subscription_get, record.sid) or record

    async def _post(self, record: SubscriptionRecord, spec: SubscriptionSpec, kind: str, timeout: float) -> str | None:
        """Post a handshake or heartbeat; None on success, else a short reason code."""
        refused = await self.guard.send_refusal(spec.endpoint)
        if refused is not None:
            return f"endpoint_refused: {refused}"
        bundle = notification_bundle(view_of(record), kind, self.base_url, self.clock.now())
        client = self._http()
        request = client.build_request("POST", spec.endpoint, content=jsonio.dumps(bundle), timeout=timeout,
                                       headers={**spec.headers, "Content-Type": "application/fhir+json"})
        try:
            _, outcome = await exchange(client, request, self.clock)
        except EndpointRefused as exc:
            return f"endpoint_refused: {exc}"
        return None if isinstance(outcome, Success) else str(getattr(outcome, "reason", "failed"))

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            transport = self.transport
            if transport is None:
                transport = httpx.AsyncHTTPTransport()
                pin_transport(transport, self.guard)
            self._client = httpx.AsyncClient(transport=transport, follow_redirects=False,
                                             headers={"User-Agent": "chw-fhir-gateway-subscriptions/0.1"})
        return self._client

    async def send_heartbeats(self) -> int:
        """Post a heartbeat to every subscription whose heartbeat-period has passed; how many were sent."""
        now = datetime.now(UTC)
        sent = 0
        for record in await asyncio.to_thread(self.store.subscription_list, live=True):
            spec = spec_of(record)
            if spec.heartbeat_period is None or record.status == "requested":
                continue
            last = record.heartbeat_at or record.created
            if (now - last).total_seconds() < spec.heartbeat_period:
                continue
            # Sent while in error too, saying so (Backport IG: errors and heartbeats).
            await self._post(record, spec, "heartbeat", float(spec.timeout or self.settings.timeout))
            await asyncio.to_thread(self.store.subscription_heartbeat, record.sid, now)
            sent += 1
        return sent

    async def start(self) -> None:
        """Start sending heartbeats (one process per check interval sends them, claimed in the store)."""
        if self._heartbeats is None:
            self._heartbeats = asyncio.create_task(self._heartbeat_loop(), name="subscription-heartbeats")

    async def stop(self) -> None:
        """Stop the heartbeats and close the HTTP client."""
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            await asyncio.gather(self._heartbeats, return_exceptions=True)
            self._heartbeats = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_check
        while True:
            await self.clock.sleep(interval)
            slot = int(self.clock.now() // interval)
            try:
                if await asyncio.to_thread(self.store.claim_run, _HEARTBEAT_TASK, slot, self._holder):
                    await self.send_heartbeats()
            except Exception as exc:  # the store may be down for a while: keep the loop alive
                log.error("subscription heartbeats: %s", type(exc).__name__)


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    """What is kept of a client's Subscription: the server owns id, status, error and the
    meta's version and time; the profiles, tags and security labels the client declared stay."""
    kept = {k: v for k, v in resource.items() if k not in ("id", "meta", "status", "error")}
    meta = resource.get("meta")
    declared = {k: v for k, v in meta.items() if k in ("profile", "tag", "security")} if isinstance(meta, dict) else {}
    if declared:
        kept["meta"] = declared
    return kept
