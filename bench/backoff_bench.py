"""Delivery through an outage on a flaky link: main's breaker (baseline) against the rate breaker.

    .venv/bin/python -m bench.backoff_bench [--changes 3000] [--outage 2.0] [--scale 0.1]

The chaos workload of ``tests/delivery/test_fault_injection.py``, run twice on the same
machine with the same seed: a loopback FHIR server answers 30% of requests 503, drops 3%
of connections, answers a few 429 Retry-After, and goes away entirely for ``--outage``
seconds once a third of the changes arrived. Everything is real (HTTP, SQLite queue,
SQLite store); only time is scaled: every breaker period is the default times ``--scale``
(0.1: main's 30 s open period becomes 3 s, the new 5 s probe interval 0.5 s). Retries
use the fault-injection test's fast backoff in both runs, so the difference is the
breaker's alone.

* baseline (main before this change): opens after 5 consecutive transient failures, open
  30 s doubling to 600 s, one probe, and each 429 holds the whole destination;
* rate breaker: opens at a 70% failure rate over a 30 s window (at least 20 calls), three
  probes every 5 s, a 429 halves the calls in flight until its Retry-After.

Measured after the outage ends: time to the first successful delivery, the drain time
(until the queue is empty), and the destination's idle time in it (the sum of gaps of
more than ``--idle-gap`` seconds with no request arriving). Goals: idle < 20% of the drain,
first delivery <= 2x the probe interval.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.delivery.breaker import BreakerPolicy, CircuitBreaker, CircuitState
from gateway.delivery.config import DeliverySettings, DestinationConfig
from gateway.delivery.policy import RetryPolicy
from gateway.delivery.service import DeliveryService
from gateway.store import open_store
from tests.delivery.destination import LoopbackFhirServer, Request
from tests.delivery.workload import Workload

RETRY_AFTER_EVERY = 400  # every 400th request is answered 429 Retry-After: 1


class ConsecutiveBreaker(CircuitBreaker):
    """main's breaker before the rate breaker, for the baseline (same interface, old rules)."""

    def __init__(self, threshold: int, open_for: float, max_open_for: float, multiplier: float = 2.0) -> None:
        super().__init__(BreakerPolicy())
        self.threshold, self.open_for = threshold, open_for
        self.max_open_for, self.multiplier = max_open_for, multiplier
        self.failures = 0
        self.opened_times = 0
        self.hold_until = 0.0

    def capacity(self, now: float, concurrency: int) -> int:
        """No call during a hold or an open period; one probe when half-open."""
        if now < self.hold_until:
            return 0
        if self.state is CircuitState.OPEN:
            if now < self.open_until:
                return 0
            self.state = CircuitState.HALF_OPEN
            self.probes_started = self.probes_failed = 0
        if self.state is CircuitState.HALF_OPEN:
            return 0 if self.probe_in_flight else 1
        return concurrency

    def wait_time(self, now: float) -> float:
        """Until the hold or the open period ends."""
        until = max(self.hold_until, self.open_until if self.state is CircuitState.OPEN else 0.0)
        return max(until - now, 0.0)

    def throttle(self, now: float, until: float, in_flight: int) -> None:
        """main held the whole destination until the Retry-After."""
        self.hold_until = max(self.hold_until, until)

    def record(self, *, ok: bool, now: float) -> bool:
        """Consecutive failures open; a failed probe reopens for twice as long."""
        before = self.state
        if ok:
            self.state = CircuitState.CLOSED
            self.failures = self.opened_times = 0
            self.probes_started = self.probes_failed = 0
        elif self.state is CircuitState.HALF_OPEN:
            self._reopen(now)
        elif self.state is CircuitState.CLOSED:
            self.failures += 1
            if self.failures >= self.threshold:
                self._reopen(now)
        return self.state is not before

    def _reopen(self, now: float) -> None:
        period = min(self.open_for * self.multiplier ** min(self.opened_times, 64), self.max_open_for)
        self.state = CircuitState.OPEN
        self.open_until = now + period
        self.opened_times += 1
        self.failures = 0
        self.probes_started = self.probes_failed = 0


class FaultPlan:
    """Seeded: 30% 503, 3% connection resets, a 429 every ``RETRY_AFTER_EVERY`` requests."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    def __call__(self, index: int, request: Request) -> str:
        if index % RETRY_AFTER_EVERY == RETRY_AFTER_EVERY - 1:
            return "429"
        with self.lock:
            roll = self.rng.random()
        return "503" if roll < 0.30 else "reset" if roll < 0.33 else "ok"


@dataclass(frozen=True)
class Result:
    """One run's figures (seconds)."""

    name: str
    probe_interval: float
    first_delivery: float
    drain: float
    idle: float
    opened: int
    requests: int

    @property
    def idle_share(self) -> float:
        """Idle time as a share of the drain time."""
        return self.idle / self.drain if self.drain else 0.0


async def run(name: str, args: argparse.Namespace, tmp: Path) -> Result:
    """One chaos run with ``name``'s breaker."""
    scale = args.scale
    store = open_store(f"sqlite:///{tmp}/{name}-store.db")
    server = LoopbackFhirServer(plan=FaultPlan(seed=11), hang=0.5).start()
    work = Workload.generate(patients=args.changes // 10, changes=args.changes, seed=5)
    work.apply(store)
    new_policy = BreakerPolicy(window=30 * scale, probe_interval=5 * scale)
    destination = DestinationConfig(name="shr", kind="fhir", base_url=server.url, concurrency=8, timeout=0.5)
    settings = DeliverySettings(
        retry=RetryPolicy(initial_delay=0.005, multiplier=2, max_delay=0.2, jitter=0.2, max_age=3600),
        breaker=new_policy,
        poll_interval=0.02,
        lease=10,
    )
    service = DeliveryService.create(
        store=store, queue_url=f"sqlite:///{tmp}/{name}-queue.db", destinations=[destination],
        settings=settings, environ={},
    )
    runtime = service.worker.runtimes["shr"]
    probe_interval = new_policy.probe_interval
    if name == "baseline":
        runtime.breaker = ConsecutiveBreaker(threshold=5, open_for=30 * scale, max_open_for=600 * scale)
        probe_interval = 30 * scale
    opened = 0

    async def watch() -> None:
        nonlocal opened
        last = runtime.breaker.state
        while True:
            state = runtime.breaker.state
            if state is not last and state is CircuitState.OPEN:
                opened += 1
            last = state
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    await service.start()
    try:
        while len(server.applied) < args.changes // 3:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(server.outage, True)
        await asyncio.sleep(args.outage)
        await asyncio.to_thread(server.outage, False)
        back = time.time()
        while True:
            stats = await service.queue.stats("shr")
            if stats.depth == 0 and (await service.queue.cursor("shr")) == store.last_change_seq():
                break
            await asyncio.sleep(0.02)
        drained = time.time()
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await service.stop()
        server.stop()
    after = sorted(r.at for r in server.requests if back <= r.at <= drained)
    first = min((r.at for r in server.applied if r.at >= back), default=drained)
    edges = [back, *after, drained]
    idle = sum(gap for gap in (b - a for a, b in zip(edges, edges[1:], strict=False)) if gap > args.idle_gap)
    return Result(name, probe_interval, first - back, drained - back, idle, opened, len(server.requests))


def main() -> None:
    """Run the baseline and the rate breaker; print one table with ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=3000)
    parser.add_argument("--outage", type=float, default=2.0, help="seconds the destination is down")
    parser.add_argument("--scale", type=float, default=0.1, help="breaker periods = defaults x this")
    parser.add_argument("--idle-gap", type=float, default=0.05, help="a gap longer than this counts as idle")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        base = asyncio.run(run("baseline", args, Path(tmp)))
        new = asyncio.run(run("rate", args, Path(tmp)))
    print(
        f"{args.changes} changes, 30% 503 + 3% resets + a 429 per {RETRY_AFTER_EVERY} requests, "
        f"{args.outage:.1f} s outage, breaker periods x{args.scale}"
    )
    print(f"{'breaker':<10}{'probe int.':>11}{'first ok':>10}{'/probe':>8}{'drain':>9}{'idle':>9}"
          f"{'idle %':>8}{'opened':>8}{'requests':>10}")
    for r in (base, new):
        print(
            f"{r.name:<10}{r.probe_interval:>10.2f}s{r.first_delivery:>9.2f}s"
            f"{r.first_delivery / r.probe_interval:>7.2f}x"
            f"{r.drain:>8.2f}s{r.idle:>8.2f}s{100 * r.idle_share:>7.1f}%{r.opened:>8}{r.requests:>10}"
        )
    ratio = lambda a, b: f"{a / b:.2f}x" if b else "-"  # noqa: E731
    print(
        f"rate / baseline: first delivery {ratio(new.first_delivery, base.first_delivery)}, "
        f"drain {ratio(new.drain, base.drain)}, idle {ratio(new.idle, base.idle)}"
    )
    print(
        f"goals (rate breaker): idle < 20% of drain: {'met' if new.idle_share < 0.2 else 'NOT met'}; "
        f"first delivery <= 2x probe interval: {'met' if new.first_delivery <= 2 * new.probe_interval else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
