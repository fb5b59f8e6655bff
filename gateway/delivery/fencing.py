"""Lease fencing: a worker never starts sending a job whose claim it may have lost.

A claim is a lease: when a worker is silent for ``lease`` seconds, another worker claims
the job again, delivers it, and then the key's next jobs become claimable. A worker that
was slow rather than dead (a stalled event loop, a partition from the queue, a process
starved of CPU) must not send its copy afterwards: that copy would land after the later
changes of the same patient and break the per-key order (issue 12, finding 8: a delivered
delete applied again after three later changes).

So every delivery runs under a ``Hold``: the time until which its claims are surely still
held, measured on the queue's clock from *before* the claim (or the renewal that
confirmed it) was sent, less a safety margin of a quarter of the lease. The queue's own
deadline is at least ``lease`` after that instant, so no other worker can claim the job
until at least ``margin`` after the hold ends. Every HTTP request of the delivery passes
``fence_request`` (an httpx request hook: the last step before the transport), which
refuses to send once the hold has ended and caps the pool, connect and write waits at
what is left of it; so a request is written before the hold ends or not at all.
A renewal that finds the claim gone ends the hold at once.

    hold = Hold(until=started + lease - margin, now=clock.now)
    with holding(hold):
        await connector.deliver(jobs)   # raises LeaseLost instead of a late request
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import httpx

from gateway.delivery.queue import QueueError

MARGIN = 0.25  # of the lease: how long before the queue's deadline a worker stops sending


class LeaseLost(QueueError):
    """A delivery's claim may have passed to another worker: nothing more may be sent for it."""


@dataclass(eq=False)
class Hold:
    """Until when (queue clock) the claims of one delivery are surely held."""

    until: float
    now: Callable[[], float]
    lost: bool = False

    def remaining(self) -> float:
        """Seconds of the hold left (0 or less: send nothing more)."""
        return -math.inf if self.lost else self.until - self.now()

    def renew(self, until: float) -> None:
        """The queue confirmed the claims at a renewal sent before ``until - lease + margin``."""
        self.until = max(self.until, until)

    def lose(self) -> None:
        """The queue no longer holds one of the claims: end the hold for good."""
        self.lost = True


def hold_until(started: float, lease: float) -> float:
    """The end of a hold whose claim or renewal request was sent at ``started``."""
    return started + lease * (1.0 - MARGIN)


_CURRENT: ContextVar[Hold | None] = ContextVar("delivery_hold", default=None)


@contextmanager
def holding(hold: Hold) -> Iterator[None]:
    """Run the enclosed requests (and tasks they start) under ``hold``."""
    token = _CURRENT.set(hold)
    try:
        yield
    finally:
        _CURRENT.reset(token)


async def fence_request(request: httpx.Request) -> None:
    """httpx request hook: refuse a request sent after its delivery's hold ended."""
    hold = _CURRENT.get()
    if hold is None:
        return
    remaining = hold.remaining()
    if remaining <= 0:
        raise LeaseLost("the claim of this delivery may have passed to another worker")
    timeout = dict(request.extensions.get("timeout") or {})
    for phase in ("pool", "connect", "write"):
        limit = timeout.get(phase)
        timeout[phase] = remaining if limit is None else min(limit, remaining)
    request.extensions["timeout"] = timeout
