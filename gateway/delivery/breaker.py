"""Per-destination circuit breaker: stop hammering a link that is down, find out fast when it is back.

    breaker = CircuitBreaker(BreakerPolicy(failure_rate=0.7, min_calls=20, window="30s"))
    slots = breaker.capacity(now, concurrency)   # how many calls may be in flight now
    breaker.started(now)
    ...                                           # deliver
    breaker.record(ok=True, now=now)

Closed: calls flow; the outcomes of the last ``window`` seconds are kept, and when at
least ``min_calls`` of them are there and the share of transient failures (timeouts,
connection errors, 5xx, 429) reaches ``failure_rate``, the circuit opens. A rate, not a
run of consecutive failures: on a link that drops 30% of requests, runs of five failures
are frequent, and a breaker counting them would stop a link that mostly works.

Open: no calls for ``probe_interval``; then half-open: up to ``probes`` calls go through
at once. The first of them to get an answer closes the circuit; if every one fails it
opens again for another ``probe_interval``. Several probes, because one probe on a
flaky link fails often (30% of the time at a 30% failure rate) and each miss used to cost
a doubled open period; a short, fixed interval, because a down link then costs
``probes`` requests per interval, and a link that comes back is used again within about
one interval, however long it was down.

A permanent 4xx counts as a success here: the destination answered, so it is up.

Throttling (``throttle``): a 429 (or 503) with Retry-After does not stop the destination.
Until the time it names, the calls in flight are limited to half of those that were in
flight when it came (at least one): the requests that would exceed the destination's
limit are held back, the rest keep flowing. The throttled job itself waits as asked (its
retry is never due earlier than the Retry-After).

Each worker process has its own breakers (they are pure, in-memory state machines with
the time passed in); transitions are published to the queue so the admin view shows them.
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from gateway.connectors import Duration

MAX_WINDOW_CALLS = 10_000  # outcomes kept per breaker, however busy the window


class CircuitState(StrEnum):
    """Where a destination's circuit breaker stands."""

    CLOSED = "closed"  # healthy: calls flow, outcomes are counted over the window
    OPEN = "open"  # looks down: no calls until the probe interval has passed
    HALF_OPEN = "half_open"  # probing: a few calls decide


class BreakerPolicy(BaseModel):
    """Thresholds of a circuit breaker (validated, frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_rate: float = Field(
        0.7, gt=0.0, le=1.0, description="open when this share of the window's calls failed transiently"
    )
    min_calls: int = Field(20, ge=1, le=MAX_WINDOW_CALLS, description="calls the window needs before it can open")
    window: Duration = Field(30.0, gt=0, description="how far back the failure rate looks")
    probe_interval: Duration = Field(5.0, gt=0, description="an open circuit lets probes through this often")
    probes: int = Field(3, ge=1, le=100, description="calls let through at once when probing")


class CircuitBreaker:
    """The state machine described in the module docstring; time is always passed in."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self.state = CircuitState.CLOSED
        self.outcomes: deque[tuple[float, bool]] = deque()  # (finished at, failed) while closed
        self.failed_in_window = 0
        self.open_until = 0.0
        self.opened_at = 0.0  # when the circuit last went from closed to open
        self.probes_started = 0
        self.probes_failed = 0
        self.throttle_until = 0.0
        self.throttle_limit = 0

    @property
    def probe_in_flight(self) -> bool:
        """Whether a probe call is still out (half-open)."""
        return self.probes_started > self.probes_failed

    def reset_probes(self) -> None:
        """Forget probes that ended without an answer either way (released at shutdown or lease loss)."""
        self.probes_started = self.probes_failed

    def capacity(self, now: float, concurrency: int) -> int:
        """How many calls may be in flight now (moves open → half-open when the interval is over)."""
        if self.state is CircuitState.OPEN:
            if now < self.open_until:
                return 0
            self.state = CircuitState.HALF_OPEN
            self.probes_started = self.probes_failed = 0
        limit = concurrency
        if now < self.throttle_until:
            limit = min(limit, self.throttle_limit)
        if self.state is CircuitState.HALF_OPEN:
            return max(min(limit, self.policy.probes - self.probes_started), 0)
        return limit

    def allow(self, now: float) -> bool:
        """May one more call start now (with no other call in flight)?"""
        return self.capacity(now, 1) > 0

    def started(self, now: float) -> None:
        """A call is starting (in half-open state it is a probe)."""
        if self.state is CircuitState.HALF_OPEN:
            self.probes_started += 1

    def wait_time(self, now: float) -> float:
        """Seconds until a call could start (0 when one may already)."""
        if self.state is CircuitState.OPEN:
            return max(self.open_until - now, 0.0)
        return 0.0

    def throttle(self, now: float, until: float, in_flight: int) -> None:
        """The destination asked to slow down until ``until``: halve the calls in flight till then."""
        limit = max(in_flight // 2, 1)
        # A second 429 inside the window halves again what the first one left.
        self.throttle_limit = limit if now >= self.throttle_until else min(self.throttle_limit, limit)
        self.throttle_until = max(self.throttle_until, until)

    def record(self, *, ok: bool, now: float) -> bool:
        """Record a finished call (ok: the destination answered); True if the state changed."""
        before = self.state
        if self.state is CircuitState.HALF_OPEN:
            if ok:
                self._close()
            else:
                self.probes_failed += 1
                if self.probes_failed >= self.policy.probes:
                    self._open(now)
        elif self.state is CircuitState.CLOSED:
            self._count(now, failed=not ok)
            calls = len(self.outcomes)
            if calls >= self.policy.min_calls and self.failed_in_window >= self.policy.failure_rate * calls:
                self.opened_at = now
                self._open(now)
        # outcomes of calls started before the circuit opened change nothing
        return self.state is not before

    def failure_share(self, now: float) -> float:
        """The share of transient failures over the window (0 when no call finished in it)."""
        self._prune(now)
        return self.failed_in_window / len(self.outcomes) if self.outcomes else 0.0

    def _count(self, now: float, *, failed: bool) -> None:
        self.outcomes.append((now, failed))
        self.failed_in_window += failed
        if len(self.outcomes) > MAX_WINDOW_CALLS:
            self.failed_in_window -= self.outcomes.popleft()[1]
        self._prune(now)

    def _prune(self, now: float) -> None:
        horizon = now - self.policy.window
        while self.outcomes and self.outcomes[0][0] < horizon:
            self.failed_in_window -= self.outcomes.popleft()[1]

    def _close(self) -> None:
        self.state = CircuitState.CLOSED
        self.outcomes.clear()
        self.failed_in_window = 0
        self.probes_started = self.probes_failed = 0

    def _open(self, now: float) -> None:
        self.state = CircuitState.OPEN
        self.open_until = now + self.policy.probe_interval
        self.outcomes.clear()
        self.failed_in_window = 0
        self.probes_started = self.probes_failed = 0
