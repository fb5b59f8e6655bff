"""Opening the delivery queue a URL names: ``sqlite:///path`` or ``redis://…``.

Kept apart from ``queue`` (the protocol the backends implement) so that the protocol
module imports no backend and the backends can import it.
"""

from __future__ import annotations

from gateway.clock import Clock
from gateway.delivery.queue import DeliveryQueue


def open_queue(url: str, *, clock: Clock, lease: float = 60.0, prefix: str = "gw:dq") -> DeliveryQueue:
    """Open the queue named by ``settings.queue_url`` (``sqlite:///path`` or ``redis://…``)."""
    # Backends are imported on use: a SQLite deployment never loads the Redis client.
    if url.startswith("sqlite:///"):
        from gateway.delivery.sqlite_queue import SQLiteQueue

        return SQLiteQueue(url.removeprefix("sqlite:///"), clock=clock, lease=lease)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from gateway.delivery.redis_queue import RedisQueue

        return RedisQueue.from_url(url, clock=clock, lease=lease, prefix=prefix)
    raise ValueError("queue url must start with sqlite:/// or redis://")
