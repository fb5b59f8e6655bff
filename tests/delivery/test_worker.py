"""The worker under a manual clock: backoff, Retry-After and the circuit, without real waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import respx

from gateway.clock import ManualClock
from gateway.connectors.fhir_server import FhirServerConnector
from gateway.delivery.breaker import BreakerPolicy, CircuitBreaker, CircuitState
from gateway.delivery.config import DestinationConfig
from gateway.delivery.http import destination_client
from gateway.delivery.policy import RetryPolicy
from gateway.delivery.sqlite_queue import SQLiteQueue
from gateway.delivery.worker import DestinationRuntime, Worker
from tests.delivery.helpers import eventually
from tests.delivery.test_queue_contract import make_job

BASE = "https://shr.example.org/fhir"


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mocked:
        yield mocked


@pytest.fixture
async def queue(tmp_path: Path, clock: ManualClock) -> AsyncIterator[SQLiteQueue]:
    queue = SQLiteQueue(tmp_path / "q.db", clock=clock, lease=600)
    yield queue
    await queue.close()


async def run_worker(
    queue: SQLiteQueue, clock: ManualClock, breaker: BreakerPolicy
) -> tuple[Worker, CircuitBreaker]:
    config = DestinationConfig(name="shr", kind="fhir", base_url=BASE, concurrency=1)
    connector = FhirServerConnector(destination_client(timeout=5, concurrency=1), BASE, clock)
    runtime = DestinationRuntime(config, connector, RetryPolicy(jitter=0), CircuitBreaker(breaker))
    worker = Worker(queue, [runtime], clock, poll_interval=1.0, lease=600, rand=lambda: 0.5)
    await worker.start()
    return worker, runtime.breaker


async def settle_down() -> None:
    """Let the worker's tasks and the queue thread finish what the clock allowed."""
    await asyncio.sleep(0.1)


async def test_backoff_follows_the_policy_on_the_injected_clock(
    router: respx.MockRouter, queue: SQLiteQueue, clock: ManualClock
) -> None:
    route = router.put(f"{BASE}/Observation/o1").mock(
        side_effect=[httpx.Response(503), httpx.Response(503), httpx.Response(200)]
    )
    await queue.enqueue("shr", [make_job(1, at=clock.now())], after=None, cursor=1)
    worker, _ = await run_worker(queue, clock, BreakerPolicy())
    try:
        await eventually(lambda: route.call_count == 1)
        await clock.advance(29)  # initial delay 30 s
        await settle_down()
        assert route.call_count == 1
        await clock.advance(2)
        await eventually(lambda: route.call_count == 2)
        await clock.advance(58)  # then 60 s
        await settle_down()
        assert route.call_count == 2
        await clock.advance(3)
        await eventually(lambda: route.call_count == 3)
        await eventually(lambda: _depth(queue, 0))
    finally:
        await worker.stop()


async def test_retry_after_delays_the_job_and_holds_back_only_the_calls_over_the_limit(
    router: respx.MockRouter, queue: SQLiteQueue, clock: ManualClock
) -> None:
    first = router.put(f"{BASE}/Observation/o1").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "120"}), httpx.Response(200)]
    )
    other = router.put(f"{BASE}/Observation/o2").respond(200)
    await queue.enqueue("shr", [make_job(1, key="a", at=clock.now())], after=None, cursor=1)
    worker, breaker = await run_worker(queue, clock, BreakerPolicy())
    try:
        await eventually(lambda: first.call_count == 1)
        await queue.enqueue("shr", [make_job(2, key="b", at=clock.now())], after=1, cursor=2)
        worker.wake("shr")
        # Another key's job goes out at once: the 429 slowed the destination, it did not stop it.
        await eventually(lambda: other.call_count == 1)
        assert breaker.throttle_until == pytest.approx(clock.now() + 120)
        assert breaker.capacity(clock.now(), 4) == 1
        await clock.advance(60)  # past the 30 s backoff, inside Retry-After
        await settle_down()
        assert first.call_count == 1  # the throttled job itself waits as asked
        await clock.advance(61)
        await eventually(lambda: first.call_count == 2)
    finally:
        await worker.stop()


async def test_the_circuit_opens_probes_and_closes(
    router: respx.MockRouter, queue: SQLiteQueue, clock: ManualClock
) -> None:
    # Four failures open the circuit, the probes fail too, then the link is back.
    outcomes = [httpx.ConnectError("refused")] * 6 + [httpx.Response(200)] * 4
    route = router.put(url__startswith=f"{BASE}/Observation/").mock(side_effect=outcomes)
    jobs = [make_job(seq, key=f"k{seq}", at=clock.now()) for seq in (1, 2, 3, 4)]
    await queue.enqueue("shr", jobs, after=None, cursor=4)
    policy = BreakerPolicy(min_calls=4, probe_interval=300, probes=2)
    worker, breaker = await run_worker(queue, clock, policy)

    def calls() -> int:
        return route.call_count

    try:
        await eventually(lambda: calls() == 4)
        await eventually(lambda: breaker.state is CircuitState.OPEN)
        await eventually(lambda: _circuit(queue, "open"))
        await clock.advance(290)  # the jobs are due again, but the circuit is open
        await settle_down()
        assert calls() == 4
        await clock.advance(11)  # the probe interval is over: two probes
        await eventually(lambda: calls() == 6)
        await eventually(lambda: breaker.state is CircuitState.OPEN)  # both failed: open for one more interval
        assert breaker.open_until - clock.now() == pytest.approx(300, abs=1)
        await clock.advance(301)
        await eventually(lambda: calls() == 10)
        await eventually(lambda: breaker.state is CircuitState.CLOSED)
        await eventually(lambda: _circuit(queue, "closed"))
        await eventually(lambda: _depth(queue, 0))
    finally:
        await worker.stop()


async def _depth(queue: SQLiteQueue, depth: int) -> bool:
    return (await queue.stats("shr")).depth == depth


async def _circuit(queue: SQLiteQueue, state: str) -> bool:
    return (await queue.stats("shr")).circuit == state


async def test_a_cancellation_disguised_as_a_queue_error_still_cancels() -> None:
    from gateway.delivery.queue import QueueUnavailable, reraise_if_cancelled

    laps = 0

    async def retry_loop() -> None:
        nonlocal laps
        while True:
            laps += 1
            try:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError as cancelled:  # a client that converts cancellations
                    raise QueueUnavailable("connection closed") from cancelled
            except QueueUnavailable as exc:
                reraise_if_cancelled(exc)

    task = asyncio.create_task(retry_loop())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)
    assert laps == 1


def test_a_partial_outcome_settles_as_a_split_with_one_dead_job_per_refused_part() -> None:
    from gateway.connectors.base import Partial, RefusedPart
    from gateway.delivery.queue import Split
    from gateway.delivery.worker import settlement_for

    job = make_job(7)
    outcome = Partial(
        (RefusedPart("v0", b'{"a":1}', "dhis2_E7610", "E7610: ..."), RefusedPart("v2", b'{"b":2}', "dhis2_E7619")),
        detail="1 of 3 values stored",
    )
    settled = settlement_for(job, outcome, RetryPolicy(jitter=0), now=0.0, rand=0.5)
    assert isinstance(settled, Split) and settled.job == job
    assert [(p.job.id, p.job.payload, p.reason, p.detail) for p in settled.parts] == [
        ("shr:7.v0", b'{"a":1}', "dhis2_E7610", "E7610: ..."),
        ("shr:7.v2", b'{"b":2}', "dhis2_E7619", None),
    ]
    assert all((p.job.key, p.job.seq, p.job.version) == (job.key, 7, job.version) for p in settled.parts)
    with pytest.raises(ValueError, match="part name"):
        RefusedPart("no/slashes", b"", "x")  # part names end up in dead-letter ids and URLs
