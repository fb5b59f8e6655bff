"""The states a delivery job moves through."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job stands; transitions are atomic in both queue backends.

    pending → in_flight → (delivered | retrying | dead); retrying → in_flight;
    dead → pending (replay); in_flight → pending (released on shutdown or lease expiry).
    """

    PENDING = "pending"  # queued: waits for a worker, or behind an earlier job with the same ordering key
    IN_FLIGHT = "in_flight"  # claimed by a worker under a lease; returns to the queue if the lease expires
    RETRYING = "retrying"  # failed transiently; waits for its due time, holding back its key's later jobs
    DEAD = "dead"  # failed permanently or ran out of retries; kept, with its payload, until replay or purge
    DELIVERED = (
        "delivered"  # accepted by the destination (or superseded); the job and its payload are dropped
    )
