"""Per-destination circuit breaker: stop hammering a link that is down.

    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=5, open_for="30s"))
    if breaker.allow(now):          # may a call start now?
        breaker.started(now)
        ...                         # deliver
        breaker.record(ok=True, now=now)

Closed: calls flow; ``failure_threshold`` consecutive transient failures (timeouts,
connection errors, 5xx, 429) open it. Open: no calls until ``open_for`` has passed, then
half-open: exactly one probe call; its success closes the circuit, its failure opens it
again for ``multiplier`` times longer (up to ``max_open_for``), so a link that is down
for days costs a probe every ``max_open_for``, not a request per job.

A permanent 4xx counts as a success here: the destination answered, so it is up.

The breaker also carries a destination-wide hold (``hold_until``) for a Retry-After on
429/503: no call starts before it, whatever the state.

Each worker process has its own breakers (they are pure, in-memory state machines with
the time passed in); transitions are published to the queue so the admin view shows them.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.connectors import Duration


class CircuitState(StrEnum):
    """Where a destination's circuit breaker stands."""

    CLOSED = "closed"  # healthy: calls flow, consecutive failures are counted
    OPEN = "open"  # looks down: no calls until the open period ends
    HALF_OPEN = "half_open"  # the open period ended: one probe call decides


class BreakerPolicy(BaseModel):
    """Thresholds of a circuit breaker (validated, frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_threshold: int = Field(5, ge=1, le=10000)
    open_for: Duration = Field(30.0, gt=0)
    max_open_for: Duration = Field(600.0, gt=0)
    multiplier: float = Field(2.0, ge=1.0, le=100.0)

    @model_validator(mode="after")
    def _validate(self) -> BreakerPolicy:
        if self.max_open_for < self.open_for:
            raise ValueError("max_open_for must be >= open_for")
        return self


class CircuitBreaker:
    """The state machine described in the module docstring; time is always passed in."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self.state = CircuitState.CLOSED
        self.failures = 0  # consecutive transient failures while closed
        self.open_until = 0.0
        self.hold_until = 0.0
        self.opened_times = 0  # consecutive re-openings, for the growing open period
        self.probe_in_flight = False

    def allow(self, now: float) -> bool:
        """May a call start now? (Moves open → half-open when the open period is over.)"""
        if now < self.hold_until:
            return False
        if self.state is CircuitState.OPEN:
            if now < self.open_until:
                return False
            self.state = CircuitState.HALF_OPEN
            self.probe_in_flight = False
        if self.state is CircuitState.HALF_OPEN:
            return not self.probe_in_flight
        return True

    def started(self, now: float) -> None:
        """A call is starting (in half-open state it is the probe)."""
        if self.state is CircuitState.HALF_OPEN:
            self.probe_in_flight = True

    def wait_time(self, now: float) -> float:
        """Seconds until ``allow`` could say yes (0 when it already may)."""
        until = self.hold_until
        if self.state is CircuitState.OPEN:
            until = max(until, self.open_until)
        return max(until - now, 0.0)

    def hold(self, until: float) -> None:
        """Start no call before ``until`` (a Retry-After from the destination)."""
        self.hold_until = max(self.hold_until, until)

    def record(self, *, ok: bool, now: float) -> bool:
        """Record a finished call (ok: the destination answered); True if the state changed."""
        before = self.state
        if ok:
            self.state = CircuitState.CLOSED
            self.failures = 0
            self.opened_times = 0
            self.probe_in_flight = False
        elif self.state is CircuitState.HALF_OPEN:
            self._open(now)
        elif self.state is CircuitState.CLOSED:
            self.failures += 1
            if self.failures >= self.policy.failure_threshold:
                self._open(now)
        # failures of calls started before the circuit opened change nothing
        return self.state is not before

    def _open(self, now: float) -> None:
        period = min(
            self.policy.open_for * self.policy.multiplier ** min(self.opened_times, 64),
            self.policy.max_open_for,
        )
        self.state = CircuitState.OPEN
        self.open_until = now + period
        self.opened_times += 1
        self.failures = 0
        self.probe_in_flight = False
