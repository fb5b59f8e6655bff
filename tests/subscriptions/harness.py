"""A gateway (API in-process, delivery worker started and stopped at will) and a subscriber stand-in
on a real loopback HTTP server, for the subscription tests and the notification bench."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from gateway.api.app import create_app
from gateway.auth import hash_token, new_token
from gateway.delivery import DeliverySettings
from gateway.services import ServicePlan, Services
from gateway.settings import Settings
from gateway.store import ApiClient, Store
from gateway.subscriptions import SubscriptionSettings
from subscriber_sandbox import SubscriberSandbox
from tests.support.gateway_app import MACHINE_SPEED_LIMITS
from tests.support.live_server import LiveServer

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "urn:chw-gateway:topic:"
LAB = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}
VITALS = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}
REFERRAL = {"coding": [{"system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral"}]}


def fast_settings(store_url: str, queue_url: str, queue_prefix: str = "gw:dq", **subscriptions: Any) -> Settings:
    """Settings with delivery and subscription delays scaled down to test speed."""
    options: dict[str, Any] = {
        "retry": {"initial_delay": 0.05, "max_delay": 0.2, "jitter": 0.0, "max_age": 600},
        "timeout": 0.5, "heartbeat_check": 0.1, "min_heartbeat_period": 1, "handshake_timeout": 2.0,
    }
    options.update(subscriptions)
    return Settings(
        store_url=store_url, queue_url=queue_url, queue_prefix=queue_prefix, allowed_hosts=["gateway.test"],
        rate_limit=MACHINE_SPEED_LIMITS, audit={"enabled": False}, message_log={"enabled": False},
        delivery=DeliverySettings(poll_interval=0.02, in_process_worker=False, lease=5.0, heartbeat_interval=0.5),
        subscriptions=SubscriptionSettings(**options),
    )


def subscription(topic: str, endpoint: str, *, content: str = "id-only", filters: Sequence[str] = (),
                 heartbeat: int | None = None, headers: Sequence[str] = ()) -> dict[str, Any]:
    """An R4 Subscription with the backport profile."""
    channel: dict[str, Any] = {
        "type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": content}]},
    }
    if heartbeat is not None:
        channel["extension"] = [{"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": heartbeat}]
    if headers:
        channel["header"] = list(headers)
    resource: dict[str, Any] = {
        "resourceType": "Subscription", "status": "requested", "reason": "partner EMR feed",
        "criteria": TOPIC + topic, "channel": channel,
        "meta": {"profile": [BACKPORT + "backport-subscription"]},
    }
    if filters:
        resource["_criteria"] = {"extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": f}
                                               for f in filters]}
    return resource


def r4_subscription(criteria: str, endpoint: str, *, payload: str | None = "application/fhir+json",
                    headers: Sequence[str] = (), status: str = "requested") -> dict[str, Any]:
    """A classic R4 criteria-based Subscription (no backport profile)."""
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint}
    if payload is not None:
        channel["payload"] = payload
    if headers:
        channel["header"] = list(headers)
    return {"resourceType": "Subscription", "status": status, "reason": "R4 partner feed", "criteria": criteria,
            "channel": channel}


#: Seconds a teardown step may take (a worker's drain_timeout here is well under one).
TEARDOWN_SECONDS = 120.0


async def _bounded(step: str, awaitable: Awaitable[Any]) -> None:
    """Await ``awaitable``; past ``TEARDOWN_SECONDS`` fail naming ``step`` with every pending task's stack."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=TEARDOWN_SECONDS)
    if done:
        task.result()
        return
    stacks = io.StringIO()
    for pending in asyncio.all_tasks():
        if pending is not asyncio.current_task():
            pending.print_stack(limit=30, file=stacks)
    task.cancel()  # not awaited: a stop that ignores cancelling must not hang this either
    raise AssertionError(f"{step} did not end in {TEARDOWN_SECONDS:.0f} s; pending tasks:\n{stacks.getvalue()}")


class Harness:
    """The gateway's API (in-process) and delivery worker over one store and queue, plus the subscriber."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.app = create_app(settings, store=store)
        self.sandbox = SubscriberSandbox()
        self.server = LiveServer(self.sandbox.app())
        self.worker: Services | None = None
        self._clients: list[httpx.AsyncClient] = []
        self._lifespan: Any = None

    def endpoint(self, name: str) -> str:
        """The stand-in's URL for endpoint ``name``."""
        return f"{self.server.url}/hook/{name}"

    async def __aenter__(self) -> Harness:
        self.server.start()
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Each step bounded: a stop that never returns (seen once in a clean-clone CI run, not
        # reproduced since) fails the test with the stacks of the tasks still pending, instead of
        # hanging the suite until CI's time runs out.
        await _bounded("stopping the delivery worker", self.stop_worker())
        for client in self._clients:
            await client.aclose()
        await _bounded("the app's lifespan shutdown", self._lifespan.__aexit__(None, None, None))
        self.server.stop()

    def client(self, *scopes: str, policy: dict[str, Any] | None = None) -> httpx.AsyncClient:
        """An API client whose token holds ``scopes`` (and data ``policy``)."""
        token = new_token()
        record = ApiClient(f"c-{uuid.uuid4().hex[:8]}", tuple(scopes), datetime.now(UTC), policy=policy)
        self.store.save_client(record, hash_token(token))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://gateway.test",
                                   headers={"Authorization": f"Bearer {token}"})
        self._clients.append(client)
        return client

    async def start_worker(self) -> None:
        """Start a delivery worker process's services (outbox, subscriptions feed, heartbeats)."""
        plan = ServicePlan(ingest=False, delivery=True, run_worker=True, audit=False, alerts=False, exports=False)
        self.worker = Services.build(self.settings, plan, store=self.store)
        await self.worker.start()

    async def stop_worker(self) -> None:
        """Stop the worker (graceful: in-flight notifications finish or are released)."""
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None
