"""The circuit breaker state machine, with time passed in (no sleeping)."""

from __future__ import annotations

from gateway.delivery.breaker import BreakerPolicy, CircuitBreaker, CircuitState

T0 = 1000.0


def opened(threshold: int = 3) -> CircuitBreaker:
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=threshold, open_for=10, max_open_for=35))
    for _ in range(threshold):
        assert breaker.allow(T0)
        breaker.started(T0)
        breaker.record(ok=False, now=T0)
    return breaker


def test_consecutive_failures_open_the_circuit() -> None:
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=3))
    assert not breaker.record(ok=False, now=T0)
    assert not breaker.record(ok=True, now=T0)  # a success resets the count
    breaker.record(ok=False, now=T0)
    breaker.record(ok=False, now=T0)
    assert breaker.record(ok=False, now=T0)
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow(T0 + 29)
    assert breaker.wait_time(T0 + 20) == 10


def test_after_the_open_period_exactly_one_probe_goes_through() -> None:
    breaker = opened()
    assert not breaker.allow(T0 + 9.9)
    assert breaker.allow(T0 + 10)
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.started(T0 + 10)
    assert not breaker.allow(T0 + 10)  # the probe is in flight


def test_a_successful_probe_closes_the_circuit() -> None:
    breaker = opened()
    breaker.allow(T0 + 10)
    breaker.started(T0 + 10)
    assert breaker.record(ok=True, now=T0 + 11)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allow(T0 + 11)


def test_a_failed_probe_reopens_for_longer_up_to_the_cap() -> None:
    breaker = opened()
    periods = []
    now = T0
    for _ in range(4):
        now = breaker.open_until
        assert breaker.allow(now)
        breaker.started(now)
        breaker.record(ok=False, now=now)
        periods.append(breaker.open_until - now)
    assert periods == [20, 35, 35, 35]


def test_late_failures_while_open_change_nothing() -> None:
    breaker = opened()
    until = breaker.open_until
    assert not breaker.record(ok=False, now=T0 + 1)
    assert breaker.open_until == until


def test_a_retry_after_hold_blocks_calls_in_any_state() -> None:
    breaker = CircuitBreaker(BreakerPolicy())
    breaker.hold(T0 + 5)
    assert not breaker.allow(T0 + 4.9)
    assert breaker.wait_time(T0) == 5
    assert breaker.allow(T0 + 5)
    breaker.hold(T0 + 1)  # an earlier hold never shortens a later one
    assert breaker.hold_until == T0 + 5
