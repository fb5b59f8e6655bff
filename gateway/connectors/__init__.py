"""Connectors: the code that talks to each kind of destination (see ``base`` for the seam).

Besides the seam, the package holds what every connector shares and the delivery engine
reuses: the outcome table (``classify``), the HTTP exchange (``http``)
and the configuration connectors read (``config``: credentials, durations).
Connectors never import the delivery engine; it imports them.
"""

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
from gateway.connectors.classify import classify, record_request, record_response
from gateway.connectors.config import (
    AuthConfig,
    Credentials,
    DeliveryConfigError,
    Destination,
    Duration,
    resolve_credentials,
)
from gateway.connectors.http import exchange

__all__ = [
    "AuthConfig",
    "Connector",
    "Credentials",
    "DeliveryConfigError",
    "DeliveryOutcome",
    "Destination",
    "Duration",
    "Job",
    "JobOp",
    "Partial",
    "Permanent",
    "RecordedRequest",
    "RecordedResponse",
    "RefusedPart",
    "Retry",
    "Success",
    "classify",
    "exchange",
    "record_request",
    "record_response",
    "resolve_credentials",
]
