"""Connectors: the code that talks to each kind of destination (see ``base`` for the seam)."""

from __future__ import annotations

from gateway.connectors.base import (
    Connector,
    DeliveryOutcome,
    Job,
    JobOp,
    Partial,
    Permanent,
    RecordedRequest,
    RecordedResponse,
    RefusedPart,
    Retry,
    Success,
)

__all__ = [
    "Connector",
    "DeliveryOutcome",
    "Job",
    "JobOp",
    "Partial",
    "Permanent",
    "RecordedRequest",
    "RecordedResponse",
    "RefusedPart",
    "Retry",
    "Success",
]
