"""The circuit breaker state machine, with time passed in (no sleeping)."""

from __future__ import annotations

import random

from gateway.delivery.breaker import BreakerPolicy, CircuitBreaker, CircuitState

T0 = 1000.0


def call(breaker: CircuitBreaker, now: float, *, ok: bool) -> bool:
    """One call through the breaker, if it lets one start; whether it did."""
    if breaker.capacity(now, 4) == 0:
        return False
    breaker.started(now)
    breaker.record(ok=ok, now=now)
    return True


def opened(policy: BreakerPolicy | None = None) -> CircuitBreaker:
    breaker = CircuitBreaker(policy or BreakerPolicy(min_calls=4, probe_interval=10, probes=3))
    now = T0
    while breaker.state is CircuitState.CLOSED:
        assert call(breaker, now, ok=False)
    return breaker


def test_a_steady_30_percent_failure_rate_does_not_open_the_circuit_with_the_defaults() -> None:
    breaker = CircuitBreaker(BreakerPolicy())
    rng = random.Random(10)
    now = T0
    run = runs_of_five = 0
    for _ in range(20_000):
        now += 0.01
        ok = rng.random() >= 0.30
        assert call(breaker, now, ok=ok)
        run = 0 if ok else run + 1
        runs_of_five += run == 5
    assert breaker.state is CircuitState.CLOSED
    # Runs of five failures in a row happened all along (each opened the old breaker).
    assert runs_of_five > 10
    assert 0.25 < breaker.failure_share(now) < 0.35


def test_a_full_outage_opens_the_circuit_once_the_window_has_enough_calls() -> None:
    policy = BreakerPolicy()
    breaker = CircuitBreaker(policy)
    for i in range(policy.min_calls - 1):
        assert call(breaker, T0 + i, ok=False)
        assert breaker.state is CircuitState.CLOSED  # too few calls to judge
    assert call(breaker, T0 + policy.min_calls, ok=False)
    assert breaker.state is CircuitState.OPEN
    assert breaker.capacity(T0 + policy.min_calls + 1, 4) == 0


def test_the_rate_only_counts_the_window() -> None:
    breaker = CircuitBreaker(BreakerPolicy(min_calls=4, window=10, failure_rate=0.5))
    for i in range(20):
        call(breaker, T0 + i * 0.1, ok=True)
    # Twenty successes long ago do not dilute the failures of now.
    for i in range(4):
        call(breaker, T0 + 30 + i, ok=False)
    assert breaker.state is CircuitState.OPEN


def test_after_the_probe_interval_several_probes_go_through_at_once() -> None:
    breaker = opened()
    assert breaker.capacity(T0 + 9.9, 8) == 0
    assert breaker.wait_time(T0 + 4) == 6
    assert breaker.capacity(T0 + 10, 8) == 3
    assert breaker.state is CircuitState.HALF_OPEN
    for _ in range(3):
        breaker.started(T0 + 10)
    assert breaker.capacity(T0 + 10, 8) == 0  # the probes are in flight
    assert breaker.probe_in_flight


def test_one_answered_probe_closes_the_circuit_even_if_others_fail() -> None:
    breaker = opened()
    breaker.capacity(T0 + 10, 8)
    for _ in range(3):
        breaker.started(T0 + 10)
    assert not breaker.record(ok=False, now=T0 + 11)  # a random 503 on a flaky link
    assert breaker.record(ok=True, now=T0 + 11)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.capacity(T0 + 11, 8) == 8


def test_failed_probes_reopen_for_one_probe_interval_however_long_the_outage() -> None:
    breaker = opened()
    now = T0
    for _ in range(50):  # a link down for a long time
        now = breaker.open_until
        assert breaker.capacity(now, 8) == 3
        for _ in range(3):
            breaker.started(now)
        for _ in range(3):
            breaker.record(ok=False, now=now)
        assert breaker.state is CircuitState.OPEN
        assert breaker.open_until - now == 10
    # The link is back: the next probes come within one interval.
    assert breaker.capacity(now + 10, 8) == 3
    breaker.started(now + 10)
    breaker.record(ok=True, now=now + 10.2)
    assert breaker.state is CircuitState.CLOSED


def test_late_failures_while_open_change_nothing() -> None:
    breaker = opened()
    until = breaker.open_until
    assert not breaker.record(ok=False, now=T0 + 1)
    assert breaker.open_until == until


def test_probes_given_back_unanswered_can_be_sent_again() -> None:
    breaker = opened()
    breaker.capacity(T0 + 10, 8)
    for _ in range(3):
        breaker.started(T0 + 10)
    breaker.reset_probes()  # shutdown or a lost lease: no answer either way
    assert breaker.capacity(T0 + 10, 8) == 3


def test_a_retry_after_halves_the_calls_in_flight_until_it_ends_and_no_longer() -> None:
    breaker = CircuitBreaker(BreakerPolicy())
    breaker.throttle(T0, T0 + 5, in_flight=8)
    assert breaker.capacity(T0 + 1, 8) == 4  # the destination is not stopped, only slowed
    breaker.throttle(T0 + 1, T0 + 3, in_flight=4)  # a second 429 inside the window halves again
    assert breaker.capacity(T0 + 2, 8) == 2
    assert breaker.throttle_until == T0 + 5  # an earlier end never shortens a later one
    assert breaker.capacity(T0 + 5, 8) == 8
    breaker.throttle(T0 + 6, T0 + 7, in_flight=1)
    assert breaker.capacity(T0 + 6, 8) == 1  # never below one call
    assert breaker.state is CircuitState.CLOSED
