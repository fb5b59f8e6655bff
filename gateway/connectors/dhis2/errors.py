"""Errors of the DHIS2 client. Messages name endpoints, statuses and DHIS2 codes, never
payload values, patient data or credentials.

    Dhis2Error                       anything that went wrong talking to DHIS2
    ├── Dhis2TransportError          no usable answer: timeout, reset, refused (retryable)
    ├── Dhis2HttpError               an HTTP error that is not an import report (status, WebMessage)
    ├── Dhis2ProtocolError           an answer that is not the shape DHIS2 documents
    └── Dhis2JobError                an async import whose outcome is unknown
        ├── Dhis2JobLost             the job/report vanished (DHIS2 restarted): resubmit
        └── Dhis2JobTimeout          the job did not finish in time: resubmit later

``Dhis2Error`` is a ``gateway.errors.ConnectorError``: deliveries turn it into a retry or a
dead letter, the CLI prints it; no FHIR client ever sees it.
"""

from __future__ import annotations

from gateway.errors import ConnectorError

__all__ = [
    "Dhis2Error",
    "Dhis2HttpError",
    "Dhis2JobError",
    "Dhis2JobLost",
    "Dhis2JobTimeout",
    "Dhis2ProtocolError",
    "Dhis2TransportError",
]


class Dhis2Error(ConnectorError):
    """Something went wrong talking to DHIS2."""


class Dhis2TransportError(Dhis2Error):
    """DHIS2 gave no usable answer (timeout, connection reset or refused)."""


class Dhis2HttpError(Dhis2Error):
    """A non-success HTTP status that carries no import report."""

    def __init__(
        self, endpoint: str, http_status: int, message: str | None, error_code: str | None = None
    ) -> None:
        detail = f"{endpoint}: HTTP {http_status}" + (f" {error_code}" if error_code else "")
        super().__init__(detail + (f": {message}" if message else ""))
        self.endpoint = endpoint
        self.http_status = http_status
        self.dhis2_message = message
        self.error_code = error_code


class Dhis2ProtocolError(Dhis2Error):
    """DHIS2 answered with something that is not the documented shape."""


class Dhis2JobError(Dhis2Error):
    """An asynchronous tracker import whose outcome is unknown."""


class Dhis2JobLost(Dhis2JobError):
    """The job or its report is gone (reports live in DHIS2's memory only)."""


class Dhis2JobTimeout(Dhis2JobError):
    """The job did not complete within the polling budget."""
