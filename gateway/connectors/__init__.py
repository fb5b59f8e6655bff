"""Connectors: the code that talks to each kind of destination (see ``base`` for the seam)."""

from __future__ import annotations

from gateway.connectors.base import (
    Connector,
    DeliveryOutcome,
    Job,
    JobOp,
    Permanent,
    RecordedRequest,
    RecordedResponse,
    Retry,
    Success,
)

__all__ = [
    "Connector",
    "DeliveryOutcome",
    "Job",
    "JobOp",
    "Permanent",
    "RecordedRequest",
    "RecordedResponse",
    "Retry",
    "Success",
]
