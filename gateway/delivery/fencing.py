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
``fence_request`` (an httpx request hook), which refuses to send once the hold has ended
and caps the pool, connect and write waits at what is left of it. Between that hook and
the socket lie awaits (a pool slot, an event-loop turn), so ``fenced_transport`` checks
again in the connection's ``write``, in the same synchronous step as the socket write
(each write: the request's last bytes go out only while the hold lasts, and a server
applies nothing of a request it did not receive whole). A renewal that finds the claim
gone ends the hold at once.

    hold = Hold(until=started + lease - margin, now=clock.now)
    with holding(hold):
        await connector.deliver(jobs)   # raises LeaseLost instead of a late request
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.connectors import wrap_network_backend
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


def _held() -> float | None:
    """Seconds left of the current delivery's hold (None: not in a delivery); raise if none."""
    hold = _CURRENT.get()
    if hold is None:
        return None
    remaining = hold.remaining()
    if remaining <= 0:
        raise LeaseLost("the claim of this delivery may have passed to another worker")
    return remaining


async def fence_request(request: httpx.Request) -> None:
    """httpx request hook: refuse a request sent after its delivery's hold ended."""
    remaining = _held()
    if remaining is None:
        return
    timeout = dict(request.extensions.get("timeout") or {})
    for phase in ("pool", "connect", "write"):
        limit = timeout.get(phase)
        timeout[phase] = remaining if limit is None else min(limit, remaining)
    request.extensions["timeout"] = timeout


# The two classes below follow httpcore's AsyncNetworkStream / AsyncNetworkBackend interfaces
# (duck-typed: httpcore comes with httpx and is not a dependency of its own here).


class _FencedStream:
    """A connection whose every write first checks the hold (no await in between)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Read from the connection."""
        data: bytes = await self._inner.read(max_bytes, timeout)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Write, unless the delivery's hold has ended."""
        _held()
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        """Close the connection."""
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> _FencedStream:
        """Upgrade to TLS, still fenced."""
        return _FencedStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        """What the underlying connection says."""
        return self._inner.get_extra_info(info)


class _FencedBackend:
    """Opens fenced connections."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> _FencedStream:
        """A fenced TCP connection."""
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _FencedStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> _FencedStream:
        """A fenced Unix-socket connection."""
        return _FencedStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        """Sleep (httpcore's retry backoff)."""
        await self._inner.sleep(seconds)


def fenced_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport, its connections checking the hold on every write."""
    transport = httpx.AsyncHTTPTransport(limits=limits)
    wrap_network_backend(transport, _FencedBackend)
    return transport
