"""The retry policy value object."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.delivery.policy import RetryPolicy

T0 = 1_700_000_000.0


def test_defaults_back_off_exponentially_to_an_hour_for_thirty_days() -> None:
    policy = RetryPolicy()
    delays = [policy.backoff(n, rand=0.5) for n in range(1, 10)]
    assert delays[:4] == [30.0, 60.0, 120.0, 240.0]
    assert delays[-1] == 3600.0
    assert policy.max_age == 30 * 86400


def test_durations_accept_units() -> None:
    policy = RetryPolicy(initial_delay="500ms", max_delay="2h", max_age="30d")
    assert (policy.initial_delay, policy.max_delay, policy.max_age) == (0.5, 7200.0, 2_592_000.0)
    with pytest.raises(ValidationError):
        RetryPolicy(initial_delay="soon")


@pytest.mark.parametrize(
    "fields",
    [
        {"initial_delay": 10, "max_delay": 5},
        {"max_attempts": None, "max_age": None},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"max_attempts": 0},
        {"initial_delay": -1},
        {"unknown": 1},
    ],
)
def test_invalid_policies_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy.model_validate(fields)


def test_the_policy_is_frozen() -> None:
    policy = RetryPolicy()
    with pytest.raises(ValidationError):
        policy.max_delay = 1  # type: ignore[misc]


def test_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, max_age=None, jitter=0)
    assert policy.next_attempt_at(attempts=2, first_enqueued_at=T0, now=T0, hint=None, rand=0.5) == T0 + 60
    assert policy.next_attempt_at(attempts=3, first_enqueued_at=T0, now=T0, hint=None, rand=0.5) is None


def test_gives_up_after_max_age() -> None:
    policy = RetryPolicy(max_age="1d", jitter=0)
    assert policy.next_attempt_at(attempts=50, first_enqueued_at=T0, now=T0 + 86399, hint=None, rand=0) == (
        T0 + 86399 + 3600
    )
    assert (
        policy.next_attempt_at(attempts=50, first_enqueued_at=T0, now=T0 + 86400, hint=None, rand=0) is None
    )


def test_retry_after_is_a_floor_never_shortened() -> None:
    policy = RetryPolicy(jitter=0)
    assert policy.next_attempt_at(attempts=1, first_enqueued_at=T0, now=T0, hint=300, rand=0) == T0 + 300
    assert policy.next_attempt_at(attempts=1, first_enqueued_at=T0, now=T0, hint=1, rand=0) == T0 + 30


def test_huge_attempt_counts_do_not_overflow() -> None:
    assert RetryPolicy(jitter=0).backoff(100_000, rand=0.5) == 3600.0
    assert RetryPolicy(multiplier=1, jitter=0).backoff(100_000, rand=0.5) == 30.0


@given(
    failures=st.integers(min_value=1, max_value=10_000),
    rand=st.floats(min_value=0, max_value=1, exclude_max=True),
    jitter=st.floats(min_value=0, max_value=1),
)
def test_jitter_stays_within_its_band(failures: int, rand: float, jitter: float) -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=3, max_delay=600, jitter=jitter)
    base = min(3.0 ** min(failures - 1, 10), 600.0)
    delay = policy.backoff(failures, rand=rand)
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9
