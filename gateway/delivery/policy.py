"""Retry policy: one validated, frozen value object, overridable per destination.

    policy = RetryPolicy(initial_delay="30s", multiplier=2, max_delay="1h", max_age="30d")
    due = policy.next_attempt_at(attempts=3, first_enqueued_at=t0, now=now, hint=None, rand=0.5)
    # None means: give up, dead-letter the job

The defaults suit links that drop for days: exponential backoff from 30 s to at most an
hour between tries, +-10% jitter so a recovering destination is not hit by every job at
once, and no attempt cap but a 30-day age limit. The circuit breaker (``breaker``) keeps
a dead destination from being hammered meanwhile, so a long outage costs few attempts.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.connectors import Duration


class RetryPolicy(BaseModel):
    """When to try a failed job again, and when to give up on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_delay: Duration = 30.0
    multiplier: float = Field(2.0, ge=1.0, le=100.0)
    max_delay: Duration = 3600.0
    jitter: float = Field(0.1, ge=0.0, le=1.0, description="+- fraction of each delay, randomised")
    max_attempts: int | None = Field(None, ge=1)
    max_age: Duration | None = 30 * 86400.0

    @model_validator(mode="after")
    def _validate(self) -> RetryPolicy:
        if self.max_delay < self.initial_delay:
            raise ValueError("max_delay must be >= initial_delay")
        if self.max_attempts is None and self.max_age is None:
            raise ValueError("set max_attempts and/or max_age: a job must not retry forever")
        return self

    def backoff(self, failures: int, *, rand: float) -> float:
        """Delay after the ``failures``-th failed attempt (1-based); ``rand`` in [0, 1) drives jitter."""
        exponent = max(failures - 1, 0)
        base = self.initial_delay
        if self.multiplier > 1.0 and base > 0.0:
            # Compare in log space: multiplier ** exponent overflows for long outages.
            limit = math.log(self.max_delay / base) / math.log(self.multiplier) if self.max_delay else 0.0
            base = self.max_delay if exponent >= limit else base * self.multiplier**exponent
        base = min(base, self.max_delay)
        return max(base * (1.0 + self.jitter * (2.0 * rand - 1.0)), 0.0)

    def next_attempt_at(
        self,
        *,
        attempts: int,
        first_enqueued_at: float,
        now: float,
        hint: float | None,
        rand: float,
    ) -> float | None:
        """When to try again after ``attempts`` failed attempts, or None to give up.

        ``hint`` is a delay the destination asked for (Retry-After): it is a floor, so the
        job never goes back earlier than asked.
        """
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return None
        if self.max_age is not None and now - first_enqueued_at >= self.max_age:
            return None
        delay = self.backoff(attempts, rand=rand)
        if hint is not None:
            delay = max(delay, hint)
        return now + delay
