"""Delivery workers: claim jobs, call connectors, settle outcomes.

One ``Worker`` runs, per destination, a claim loop bounded by that destination's
concurrency and guarded by its circuit breaker, so a dead or slow destination only ever
occupies its own slots. Outcomes are settled in batches by one settle loop (an ack, a
retry due time, or a dead letter), and a heartbeat renews the leases of jobs in flight.

    worker = Worker(queue, [DestinationRuntime(config, connector, policy, breaker)], clock)
    await worker.start()
    ...
    await worker.stop()   # finishes in-flight jobs (up to drain_timeout), releases the rest

Outcome handling: Success → ack; Retry → the retry policy picks the due time (never
earlier than a Retry-After), or gives up → dead letter "retries_exhausted"; Permanent →
dead letter with request/response (in the letter of its ``group`` when it names the
destination object refused); Partial → delivered, and one dead letter per refused
part (``Split``); an exception raised by a connector → dead letter "internal_error" with
the traceback (a bug must not become a silent retry loop), except ``StoreUnavailable``: the
gateway's own store is down for a while, and the jobs are retried ("store_unavailable").

Fencing (``fencing``): each delivery runs under a hold that ends a quarter-lease before
the queue could give its jobs to another worker; the heartbeat moves it on only when the
queue confirms the claims, and ends it when the queue says one is gone. A request the
connector would send after the hold ended is refused (``LeaseLost``) and the jobs are
released untried: a slow worker never delivers a job after another worker delivered it
and the key's later jobs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.clock import Clock, wait_event
from gateway.connectors import (
    Connector,
    DeliveryOutcome,
    Job,
    Partial,
    Permanent,
    Redaction,
    Retry,
    Success,
    format_traceback,
)
from gateway.delivery.breaker import CircuitBreaker, CircuitState
from gateway.delivery.config import DestinationConfig
from gateway.delivery.fencing import Hold, LeaseLost, hold_until, holding
from gateway.delivery.journal import Journal, attempt_lines
from gateway.delivery.policy import RetryPolicy
from gateway.delivery.queue import (
    Ack,
    Bury,
    DeliveryQueue,
    Nack,
    QueueError,
    QueueUnavailable,
    Release,
    Settlement,
    Split,
    WorkerBeat,
    part_job,
    reraise_if_cancelled,
)
from gateway.metrics import metrics
from gateway.store import StoreUnavailable

log = logging.getLogger(__name__)


def worker_name() -> str:
    """A name unique to this process, for queue consumer groups and logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(eq=False)
class DestinationRuntime:
    """A destination as the worker runs it: config, connector, policies and live state."""

    config: DestinationConfig
    connector: Connector
    policy: RetryPolicy
    breaker: CircuitBreaker
    redaction: Redaction = field(default_factory=Redaction)  # the destination's credentials, kept out of dead letters
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    active_calls: int = 0
    in_flight: dict[str, Job] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)  # job id -> its delivery's hold

    @property
    def name(self) -> str:
        """The destination's name."""
        return self.config.name


def settlement_for(
    job: Job, outcome: DeliveryOutcome, policy: RetryPolicy, *, now: float, rand: float
) -> Settlement:
    """What to record for ``job`` after ``outcome`` (see the module docstring)."""
    if isinstance(outcome, Success):
        return Ack(job)
    if isinstance(outcome, Retry):
        due = policy.next_attempt_at(
            attempts=job.attempts + 1,
            first_enqueued_at=job.enqueued_at,
            now=now,
            hint=outcome.delay,
            rand=rand,
        )
        if due is None:
            detail = f"gave up after {job.attempts + 1} attempts; last error: {outcome.reason}"
            return Bury(job, reason="retries_exhausted", detail=detail)
        return Nack(job, due_at=due, reason=outcome.reason)
    if isinstance(outcome, Partial):
        parts = tuple(
            Bury(part_job(job, part.part, part.payload), part.reason, part.detail, part.request, part.response)
            for part in outcome.refused
        )
        return Split(job, parts)
    return Bury(job, outcome.reason, outcome.detail, outcome.request, outcome.response, outcome.group)


# Reason codes carry parts a destination chose (DHIS2's error code, CommCare's failure nature): as
# metric labels they are kept to a safe shape and a bounded number, past which they count as "other".
_REASON_LABEL = re.compile(r"[A-Za-z0-9_.-]{1,48}")
_MAX_REASON_LABELS = 200
_reason_labels: set[str] = set()


def reason_label(reason: str) -> str:
    """``reason`` as a metric label: itself if well formed and among the first few hundred seen, else "other"."""
    if reason in _reason_labels:
        return reason
    if not _REASON_LABEL.fullmatch(reason) or len(_reason_labels) >= _MAX_REASON_LABELS:
        return "other"
    _reason_labels.add(reason)
    return reason


def _count_attempts(destination: str, settlements: Sequence[Settlement]) -> None:
    """One ``gateway_delivery_attempts`` sample per attempted job: its outcome and reason code."""
    counter = metrics().delivery_attempts
    for item in settlements:
        if isinstance(item, Ack):
            counter.labels(destination, "delivered", "ok").inc()
        elif isinstance(item, Nack):
            counter.labels(destination, "retry", reason_label(item.reason)).inc()
        elif isinstance(item, Bury):
            counter.labels(destination, "dead", reason_label(item.reason)).inc()
        elif isinstance(item, Split):
            counter.labels(destination, "partial", "refused_parts").inc()


class Worker:
    """Runs delivery for a set of destinations in this process (see the module docstring)."""

    def __init__(
        self,
        queue: DeliveryQueue,
        runtimes: Sequence[DestinationRuntime],
        clock: Clock,
        *,
        name: str | None = None,
        poll_interval: float = 0.5,
        lease: float = 60.0,
        drain_timeout: float = 10.0,
        settle_batch: int = 500,
        heartbeat_interval: float = 10.0,
        rand: Callable[[], float] = random.random,
        journal: Journal | None = None,
    ) -> None:
        self.queue = queue
        self.journal = journal
        self.runtimes = {runtime.name: runtime for runtime in runtimes}
        self.clock = clock
        self.name = name or worker_name()
        self.poll_interval = poll_interval
        self.lease = lease
        self.drain_timeout = drain_timeout
        self.settle_batch = settle_batch
        self.heartbeat_interval = heartbeat_interval
        self.rand = rand
        self.started_at = 0.0
        self._settlements: asyncio.Queue[list[Settlement] | None] = asyncio.Queue()
        self._deliveries: set[asyncio.Task[None]] = set()
        self._claimers: list[asyncio.Task[None]] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._liveness: asyncio.Task[None] | None = None
        self._settler: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the claim loops, the settle loop and the heartbeats (lease and liveness)."""
        self._stopping = False
        self.started_at = self.clock.now()
        await self._beat()  # seen as alive from the start, not one interval later
        self._liveness = asyncio.create_task(self._liveness_loop(), name="delivery-liveness")
        self._settler = asyncio.create_task(self._settle_loop(), name="delivery-settle")
        self._claimers = [
            asyncio.create_task(self._claim_loop(runtime), name=f"delivery-{runtime.name}")
            for runtime in self.runtimes.values()
        ]
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="delivery-heartbeat")
        log.info("delivery worker %s started for %d destination(s): %s", self.name, len(self.runtimes),
                 ", ".join(self.runtimes) or "none")

    async def stop(self) -> None:
        """Stop claiming, let in-flight jobs finish (up to drain_timeout), release the rest."""
        self._stopping = True
        self.wake()
        claimers, self._claimers = self._claimers, []
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._liveness is not None:
            self._liveness.cancel()
            await asyncio.gather(self._liveness, return_exceptions=True)
            self._liveness = None
        if claimers:
            # Claim loops exit at their next check; a claim already sent completes and its
            # jobs are delivered or released below instead of staying leased until expiry.
            _, stuck = await asyncio.wait(claimers, timeout=self.drain_timeout)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*claimers, return_exceptions=True)
        if self._heartbeat is not None:
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if self._deliveries:
            _, unfinished = await asyncio.wait(set(self._deliveries), timeout=self.drain_timeout)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        if self._settler is not None:
            self._settlements.put_nowait(None)
            try:
                await asyncio.wait_for(self._settler, timeout=max(self.drain_timeout, 1.0))
            except TimeoutError:
                log.warning("delivery worker %s: settlements not flushed; leases will expire", self.name)
            self._settler = None
        try:
            await self.queue.forget_worker(self.name)
        except QueueError as exc:
            reraise_if_cancelled(exc)
            log.warning("delivery worker %s: heartbeat not removed (%s)", self.name, type(exc).__name__)
        log.info("delivery worker %s stopped", self.name)

    def wake(self, destination: str | None = None) -> None:
        """New jobs may be claimable (for one destination, or all)."""
        targets = [self.runtimes[destination]] if destination in self.runtimes else self.runtimes.values()
        for runtime in targets:
            runtime.wake.set()

    # -- claiming ---------------------------------------------------------------------------

    async def _claim_loop(self, runtime: DestinationRuntime) -> None:
        backoff = self.poll_interval
        while not self._stopping:
            runtime.wake.clear()
            now = self.clock.now()
            capacity = runtime.breaker.capacity(now, runtime.config.concurrency)
            if capacity == 0 and runtime.breaker.state is CircuitState.OPEN:
                wait = runtime.breaker.wait_time(now) or self.poll_interval
                await wait_event(runtime.wake, min(wait, self.poll_interval * 4), self.clock)
                continue
            batch = runtime.config.batch_size
            free = capacity - runtime.active_calls
            if free <= 0:
                await wait_event(runtime.wake, self.poll_interval, self.clock)
                continue
            limit = free * batch
            started = self.clock.now()  # before the claim: the queue's lease ends lease after this or later
            try:
                jobs = await self.queue.claim(
                    runtime.name, worker=self.name, limit=limit, coalesce=runtime.config.coalesces
                )
            except QueueError as exc:
                reraise_if_cancelled(exc)
                log.warning("delivery %s: claim failed (%s); retrying", runtime.name, type(exc).__name__)
                await self.clock.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = self.poll_interval
            if not jobs:
                await wait_event(runtime.wake, self.poll_interval, self.clock)
                continue
            for start in range(0, len(jobs), batch):
                chunk = jobs[start : start + batch]
                runtime.breaker.started(now)
                runtime.active_calls += 1
                hold = Hold(hold_until(started, self.lease), self.clock.now)
                for job in chunk:
                    runtime.in_flight[job.id] = job
                    runtime.holds[job.id] = hold
                task = asyncio.create_task(self._deliver(runtime, chunk, hold))
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)

    # -- delivering -------------------------------------------------------------------------

    async def _deliver(self, runtime: DestinationRuntime, jobs: list[Job], hold: Hold) -> None:
        try:
            with holding(hold), metrics().delivery_seconds.labels(runtime.name).time():
                outcomes = await self._call_connector(runtime, jobs)
        except asyncio.CancelledError:
            # Shutdown: whether the destination got it is unknown; give it back untried
            # (delivery is at-least-once and writes are idempotent).
            runtime.breaker.reset_probes()
            self._settlements.put_nowait([Release(job) for job in jobs])
            runtime.active_calls -= 1
            raise
        except LeaseLost:
            # Another worker may hold these jobs now: send nothing more. The release is
            # ignored if the claim did pass on, and hands the jobs back early if not.
            log.warning("delivery %s: lease lost before sending %d jobs; released", runtime.name, len(jobs))
            runtime.breaker.reset_probes()
            self._settlements.put_nowait([Release(job) for job in jobs])
            runtime.active_calls -= 1
            runtime.wake.set()
            return
        now = self.clock.now()
        self._observe(runtime, outcomes, now)
        settlements = [
            settlement_for(job, outcome, runtime.policy, now=now, rand=self.rand())
            for job, outcome in zip(jobs, outcomes, strict=True)
        ]
        _count_attempts(runtime.name, settlements)
        self._settlements.put_nowait(settlements)
        if self.journal is not None:
            self.journal(attempt_lines(settlements, now))
        runtime.active_calls -= 1
        runtime.wake.set()

    async def _call_connector(self, runtime: DestinationRuntime, jobs: list[Job]) -> list[DeliveryOutcome]:
        try:
            outcomes = await runtime.connector.deliver(jobs)
            if len(outcomes) != len(jobs):
                raise RuntimeError(f"connector returned {len(outcomes)} outcomes for {len(jobs)} jobs")
        except (asyncio.CancelledError, LeaseLost):
            raise
        except StoreUnavailable as exc:
            # The gateway's own store (read to plan the request, written for write-backs) is down
            # for a while (a restart, a failover): not a bug and not the destination's fault, so
            # the jobs wait and are tried again, and the breaker does not count it against the link.
            reraise_if_cancelled(exc)
            log.warning("delivery %s: store unavailable for %d jobs; retrying", runtime.name, len(jobs))
            return [Retry(delay=None, reason="store_unavailable", link_ok=True)] * len(jobs)
        except Exception as exc:  # a bug in our code: dead-letter with the traceback, do not retry
            reraise_if_cancelled(exc)
            log.error(
                "delivery %s: connector raised %s for %d jobs", runtime.name, type(exc).__name__, len(jobs)
            )
            failure = Permanent(reason="internal_error", detail=format_traceback(exc))
            return [runtime.redaction.scrub(failure)] * len(jobs)
        return [runtime.redaction.scrub(outcome) for outcome in outcomes]

    def _observe(self, runtime: DestinationRuntime, outcomes: list[DeliveryOutcome], now: float) -> None:
        """Feed the breaker: an answer means the link is up, only transient failures mean down."""
        breaker = runtime.breaker
        for outcome in outcomes:
            if isinstance(outcome, Retry) and outcome.throttle and outcome.delay:
                breaker.throttle(now, now + outcome.delay, runtime.active_calls)
        answered = any(
            isinstance(o, Success | Partial)
            or (isinstance(o, Permanent) and o.reason != "internal_error")
            or (isinstance(o, Retry) and o.link_ok)
            for o in outcomes
        )
        if answered:
            changed = breaker.record(ok=True, now=now)
        elif all(isinstance(o, Retry) for o in outcomes):
            changed = breaker.record(ok=False, now=now)
        else:
            breaker.reset_probes()
            changed = False
        if changed:
            metrics().circuit_transitions.labels(runtime.name, breaker.state.value).inc()
            until = breaker.open_until if breaker.state is CircuitState.OPEN else None
            log.warning("delivery %s: circuit %s", runtime.name, breaker.state.value)
            task = asyncio.create_task(self._publish_circuit(runtime.name, breaker.state.value, until))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    async def _publish_circuit(self, destination: str, state: str, until: float | None) -> None:
        try:
            await self.queue.set_circuit(destination, state, until)
        except QueueError as exc:
            reraise_if_cancelled(exc)
            log.warning("delivery %s: circuit state not published (%s)", destination, type(exc).__name__)

    # -- settling and leases ----------------------------------------------------------------

    async def _settle_loop(self) -> None:
        done = False
        while not done:
            first = await self._settlements.get()
            if first is None:
                done = True
                first = []
            batch = list(first)
            while len(batch) < self.settle_batch and not self._settlements.empty():
                more = self._settlements.get_nowait()
                if more is None:
                    done = True
                    break
                batch += more
            if batch:
                await self._flush(batch)

    async def _flush(self, batch: list[Settlement]) -> None:
        delay = 0.05
        for attempt in range(1000):
            try:
                await self.queue.settle(batch)
                break
            except QueueUnavailable as exc:
                reraise_if_cancelled(exc)
                if attempt == 0:
                    log.warning("delivery: queue unavailable while settling %d jobs; retrying", len(batch))
            except QueueError as exc:
                reraise_if_cancelled(exc)
                log.error(
                    "delivery: settling %d jobs failed (%s); leases will expire", len(batch), type(exc).__name__
                )
                break
            await self.clock.sleep(delay)
            delay = min(delay * 2, 5.0)
        for item in batch:
            runtime = self.runtimes.get(item.job.destination)
            if runtime is not None:
                held = runtime.in_flight.get(item.job.id)
                if held is not None and held.receipt == item.job.receipt:
                    # (a stale claim's settlement must not end the renewals of the job's new claim)
                    del runtime.in_flight[item.job.id]
                    runtime.holds.pop(item.job.id, None)
                runtime.wake.set()

    async def _liveness_loop(self) -> None:
        while True:
            await self.clock.sleep(self.heartbeat_interval)
            await self._beat()

    async def _beat(self) -> None:
        """Tell the queue this worker is alive (the admin view's "workers")."""
        try:
            served = [name for name, runtime in self.runtimes.items()
                      if not runtime.config.internal or await self.queue.cursor(name) is not None]
            beat = WorkerBeat(
                name=self.name,
                destinations=tuple(served),
                started_at=self.started_at,
                last_seen=self.clock.now(),
                in_flight=sum(len(runtime.in_flight) for runtime in self.runtimes.values()),
            )
            await self.queue.heartbeat(beat)
        except QueueError as exc:
            reraise_if_cancelled(exc)
            log.warning("delivery worker %s: heartbeat not recorded (%s)", self.name, type(exc).__name__)

    async def _heartbeat_loop(self) -> None:
        while True:
            await self.clock.sleep(self.lease / 3)
            held = [
                (job, runtime.holds.get(job.id))
                for runtime in self.runtimes.values()
                for job in list(runtime.in_flight.values())
            ]
            if not held:
                continue
            started = self.clock.now()
            try:
                renewed = await self.queue.extend([job for job, _ in held])
            except QueueError as exc:
                # The holds keep their ends: past them, nothing more is sent for these jobs.
                reraise_if_cancelled(exc)
                log.warning("delivery: lease renewal failed (%s)", type(exc).__name__)
                continue
            until = hold_until(started, self.lease)
            for job, hold in held:
                if hold is None:
                    continue
                if job.id in renewed:
                    hold.renew(until)
                else:
                    hold.lose()
