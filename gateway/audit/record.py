"""``AccessRecord``: the facts of one request the audit trail keeps, gathered while it runs.

Building one costs a few attribute writes on the request path; turning it into an
AuditEvent (``events.audit_event``) happens later, on the writer's flush thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A reference to a Patient inside stored JSON, relative or absolute, versioned or not.
_PATIENT_REF = re.compile(rb'"reference":"(?:[^"]*/)?Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[0-9]+)?"')


@dataclass(slots=True)
class AccessRecord:
    """One request as the audit trail sees it (no bodies, no credentials)."""

    recorded: float  # epoch seconds the request arrived
    interaction: str  # restful-interaction code (read, search-type, create, ...) or a gateway action
    action: str  # C R U D E
    rest: bool = True  # a FHIR RESTful interaction (type ``rest``), else a gateway function
    client: str | None = None  # the authenticated client's name; None when it did not authenticate
    address: str | None = None  # the client's IP address
    status: int | None = None  # the HTTP status answered; None when the request failed inside the gateway
    resources: list[str] = field(default_factory=list)  # "Type/id" or "Type/id/_history/v"
    patients: set[str] = field(default_factory=set)  # ids of the Patients concerned
    query: str | None = None  # search parameters (urlencoded), never a body
    objects: list[tuple[str, str]] = field(default_factory=list)  # (kind, name): quarantine/12, destination/x

    def touched(self, rtype: str, rid: str, version: int | None = None, content: bytes | None = None) -> None:
        """Note a resource the request read or wrote, and the patients it concerns."""
        self.resources.append(f"{rtype}/{rid}" if version is None else f"{rtype}/{rid}/_history/{version}")
        self.concerning(rtype, rid, content)

    def concerning(self, rtype: str, rid: str, content: bytes | None) -> None:
        """Note the patients a resource concerns: a Patient itself, else those its content refers to."""
        if rtype == "Patient":
            self.patients.add(rid)
        elif content:
            self.patients.update(patients_in(content))

    @property
    def outcome(self) -> str:
        """AuditEvent.outcome: 0 success, 4 minor failure (4xx), 8 serious failure (5xx, crash)."""
        if self.status is None or self.status >= 500:
            return "8"
        return "4" if self.status >= 400 else "0"


def patients_in(content: bytes) -> set[str]:
    """Ids of the Patients a resource's JSON refers to (a byte scan, no parsing)."""
    if b"Patient/" not in content:
        return set()
    return {match.decode() for match in _PATIENT_REF.findall(content)}
