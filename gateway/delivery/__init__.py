"""Reliable delivery: outbox, durable queue (SQLite or Redis), workers, retries, dead letters.

The story, end to end: a committed write appends to the store's change feed; the
``Outbox`` turns changes into jobs per destination (``queue.enqueue`` moves its cursor
atomically with the jobs); a ``Worker`` claims head jobs per ordering key, calls the
destination's ``Connector`` and settles each outcome (ack, retry per ``RetryPolicy``,
dead letter); ``DeliveryAdmin`` shows and repairs it. ``DeliveryService`` wires it all.
"""

from __future__ import annotations

from gateway.delivery.admin import (
    AdminHandle,
    DeliveryAdmin,
    DestinationStatus,
    UnknownDeadLetter,
    UnknownDestination,
    open_admin,
)
from gateway.delivery.breaker import BreakerPolicy, CircuitBreaker, CircuitState
from gateway.delivery.config import DeliverySections, DeliverySettings, DestinationConfig, SubscriptionFilter
from gateway.delivery.outbox import Outbox, ordering_key
from gateway.delivery.policy import RetryPolicy
from gateway.delivery.queue import (
    DeadLetter,
    DeadLetterFilter,
    DeliveryQueue,
    QueueError,
    QueueStats,
    QueueUnavailable,
)
from gateway.delivery.queue_factory import open_queue
from gateway.delivery.service import DeliveryService
from gateway.delivery.states import JobState
from gateway.delivery.worker import Worker

__all__ = [
    "AdminHandle",
    "DeliverySections",
    "open_admin",
    "BreakerPolicy",
    "CircuitBreaker",
    "CircuitState",
    "DeadLetter",
    "DeadLetterFilter",
    "DeliveryAdmin",
    "DeliveryQueue",
    "DeliveryService",
    "DeliverySettings",
    "DestinationConfig",
    "DestinationStatus",
    "JobState",
    "Outbox",
    "QueueError",
    "QueueStats",
    "QueueUnavailable",
    "RetryPolicy",
    "SubscriptionFilter",
    "UnknownDeadLetter",
    "UnknownDestination",
    "Worker",
    "ordering_key",
    "open_queue",
]
