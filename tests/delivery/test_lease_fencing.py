"""Lease fencing: a worker that lost its claim never sends the job after the key's later jobs.

The reorder of issue 12 (finding 8): worker A claims a patient's delete, then stalls before
sending it (a stalled event loop, CPU starvation, a partition from the queue: its heartbeat
cannot renew the lease). The lease expires; worker B claims the delete, delivers it, and
then the patient's three later changes. When A wakes up it must not send its stale copy:
the destination would apply the delete again after the later changes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import httpx
import pytest

from gateway.clock import ManualClock
from gateway.connectors import Connector, DeliveryOutcome, Job
from gateway.connectors.fhir_server import FhirServerConnector
from gateway.delivery.breaker import BreakerPolicy, CircuitBreaker
from gateway.delivery.config import DestinationConfig
from gateway.delivery.fencing import Hold, LeaseLost, fence_request, holding
from gateway.delivery.http import destination_client
from gateway.delivery.policy import RetryPolicy
from gateway.delivery.queue import DeliveryQueue, QueueUnavailable
from gateway.delivery.worker import DestinationRuntime, Worker
from tests.delivery.conftest import QueueFactory
from tests.delivery.destination import LoopbackFhirServer
from tests.delivery.helpers import eventually
from tests.delivery.test_queue_contract import make_job

LEASE = 60.0


class StallsFirst:
    """A connector that stalls its first delivery (before anything is sent) until released."""

    def __init__(self, inner: Connector) -> None:
        self.inner = inner
        self.stalled = asyncio.Event()
        self.go = asyncio.Event()
        self.calls = 0
        self.finished = 0

    async def deliver(self, jobs: Sequence[Job]) -> list[DeliveryOutcome]:
        self.calls += 1
        try:
            if self.calls == 1:
                self.stalled.set()
                await self.go.wait()
            return await self.inner.deliver(jobs)
        finally:
            self.finished += 1

    async def aclose(self) -> None:
        await self.inner.aclose()


class Partitioned:
    """A queue this worker reaches for claims and settlements, but whose renewals fail."""

    def __init__(self, inner: DeliveryQueue) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def extend(self, jobs: Sequence[Job]) -> set[str]:
        raise QueueUnavailable("partitioned")


def make_worker(queue: object, connector: Connector, clock: ManualClock, name: str) -> Worker:
    config = DestinationConfig(name="shr", kind="fhir", base_url="http://unused", concurrency=1, coalesce=False)
    runtime = DestinationRuntime(config, connector, RetryPolicy(jitter=0), CircuitBreaker(BreakerPolicy()))
    return Worker(queue, [runtime], clock, name=name, poll_interval=1.0, lease=LEASE)  # type: ignore[arg-type]


async def test_a_worker_that_lost_its_lease_does_not_resend_after_later_changes(
    queue_factory: QueueFactory, clock: ManualClock
) -> None:
    queue = await queue_factory()
    server = LoopbackFhirServer().start()
    delete = dataclasses.replace(make_job(1, "Patient/p1", at=clock.now()), op="delete", payload=b"")
    later = [make_job(seq, "Patient/p1", at=clock.now()) for seq in (2, 3, 4)]
    assert await queue.enqueue("shr", [delete, *later], after=None, cursor=4)

    def fhir() -> FhirServerConnector:
        return FhirServerConnector(destination_client(timeout=5, concurrency=1), server.url, clock)

    slow = StallsFirst(fhir())
    worker_a = make_worker(Partitioned(queue), slow, clock, "a")
    worker_b = make_worker(queue, fhir(), clock, "b")
    await worker_a.start()
    try:
        await asyncio.wait_for(slow.stalled.wait(), timeout=10)  # A holds the delete, unsent
        await clock.advance(LEASE + 1)  # A's renewals failed meanwhile: its lease is over
        await worker_b.start()
        await eventually(lambda: len(server.applied) == 4)  # B: the delete, then the 3 later changes
        slow.go.set()  # A wakes up with its stale claim
        await eventually(lambda: slow.finished == 1)
        await asyncio.sleep(0.2)
        assert [write.seq for write in server.applied] == [1, 2, 3, 4]
        assert [r.seq for r in server.requests] == [1, 2, 3, 4]  # A's copy never left
        assert (await queue.stats("shr")).depth == 0
    finally:
        await worker_b.stop()
        await worker_a.stop()
        server.stop()


class Forgetful(Partitioned):
    """A queue whose renewals answer that none of the claims is held any more."""

    async def extend(self, jobs: Sequence[Job]) -> set[str]:
        return set()


async def test_a_renewal_that_finds_the_claim_gone_ends_the_hold_at_once(
    queue_factory: QueueFactory, clock: ManualClock
) -> None:
    queue = await queue_factory()
    server = LoopbackFhirServer().start()
    await queue.enqueue("shr", [make_job(1, "Patient/p1", at=clock.now())], after=None, cursor=1)
    slow = StallsFirst(FhirServerConnector(destination_client(timeout=5, concurrency=1), server.url, clock))
    worker = make_worker(Forgetful(queue), slow, clock, "a")
    await worker.start()
    try:
        await asyncio.wait_for(slow.stalled.wait(), timeout=10)
        hold = worker.runtimes["shr"].holds["shr:1"]
        assert hold.remaining() == pytest.approx(LEASE * 0.75)
        await clock.advance(LEASE / 3 + 0.1)  # the heartbeat's renewal: "not yours any more"
        await eventually(lambda: hold.lost)
        assert hold.remaining() < 0  # long before its planned end
        slow.go.set()
        await eventually(lambda: slow.finished >= 1)
        # The stalled copy was never sent; released, the job went out once, by a fresh claim.
        await eventually(lambda: len(server.applied) == 1)
        assert [r.seq for r in server.requests] == [1]
    finally:
        await worker.stop()
        server.stop()


async def test_the_hook_refuses_a_request_after_the_hold_and_caps_waits_within_it() -> None:
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    now = [100.0]
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(record),
        timeout=httpx.Timeout(30.0),
        event_hooks={"request": [fence_request]},
    )
    hold = Hold(until=102.5, now=lambda: now[0])
    async with client:
        await client.get("http://dest/unfenced")  # no hold: an ordinary request
        with holding(hold):
            await client.get("http://dest/a")
            now[0] = 102.5
            with pytest.raises(LeaseLost):
                await client.get("http://dest/b")
        assert [r.url.path for r in sent] == ["/unfenced", "/a"]
        timeout = sent[1].extensions["timeout"]
        assert (timeout["pool"], timeout["connect"], timeout["write"]) == (2.5, 2.5, 2.5)
        assert timeout["read"] == 30.0  # an answer may take as long as it takes
        hold.until = 200.0
        hold.lose()
        with holding(hold), pytest.raises(LeaseLost):
            await client.get("http://dest/c")


async def test_a_hold_that_ends_after_the_hook_still_stops_the_write() -> None:
    # The hook ran in time, then the worker stalled (a pool slot, an event-loop turn, the OS)
    # past the hold: the connection's own check must keep the request off the wire.
    server = LoopbackFhirServer().start()
    readings = iter([100.0, 200.0])
    hold = Hold(until=150.0, now=lambda: next(readings, 300.0))
    client = destination_client(timeout=5, concurrency=1)
    try:
        with holding(hold), pytest.raises(LeaseLost):
            await client.put(f"{server.url}/Observation/o1", json={"resourceType": "Observation"})
        assert next(readings, None) is None  # both checks ran: the hook's and the write's
        response = await client.put(f"{server.url}/Observation/o1", json={"resourceType": "Observation"})
        assert response.status_code == 201  # the client itself is fine; outside a delivery: no hold
        assert [r.path for r in server.requests] == ["/fhir/Observation/o1"]
    finally:
        await client.aclose()
        server.stop()
