"""What every identity decision leaves behind: a Provenance naming who decided, what was written and
the versions it replaced (so the decision can be undone), in the decision's own transaction.

``Provenance.activity`` is the ISO 21089 lifecycle event (``link``, ``unlink``, ``merge``,
``unmerge``); ``target`` the versions written; ``entity`` (role ``revision``) each resource's
version before the decision. An undo reads those versions back (``gateway.identity.merge``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import RequestError
from gateway.fhir import client_provenance
from gateway.identity.golden import Writes

LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
_DISPLAY = {"link": "Link Record", "unlink": "Unlink Record", "merge": "Merge Record", "unmerge": "Unmerge Record"}


class IdentityDecisionError(RequestError):
    """A review or merge decision that cannot be made as asked: 404 when what it names does not
    exist, 409 when the records are not in a state it applies to (the message says which)."""


def not_found(what: str) -> IdentityDecisionError:
    """The error for a review pair, Patient or merge that does not exist."""
    return IdentityDecisionError(f"{what} does not exist", status=404, code="not-found")


def conflict(message: str) -> IdentityDecisionError:
    """The error for a decision the records' state does not allow."""
    return IdentityDecisionError(message, status=409, code="conflict")


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one decision: the Provenance recording it and the resources it wrote."""

    action: str
    provenance: str
    written: list[str] = field(default_factory=list)  # "Type/id/_history/v"
    patients: list[str] = field(default_factory=list)  # ids of the Patients it concerns

    def to_json(self) -> dict[str, Any]:
        """The decision as the admin API and the CLI show it."""
        return {"action": self.action, "provenance": f"Provenance/{self.provenance}", "written": self.written}


def record(writes: Writes, action: str, client: str, patients: list[str], pid: str | None = None) -> Decision:
    """Store the Provenance of a decision whose writes are ``writes``; ``pid`` fixes its id."""
    targets = list(writes.written.values())
    if not targets:
        raise conflict(f"nothing to {action}: the records are already as asked")
    provenance = client_provenance(targets, "UPDATE", client)
    provenance["id"] = pid or str(uuid.uuid4())
    provenance["activity"] = {"coding": [{"system": LIFECYCLE, "code": action, "display": _DISPLAY[action]}]}
    provenance["entity"] = [
        {"role": "revision", "what": {"reference": f"{rtype}/{rid}/_history/{version}"}}
        for (rtype, rid), version in sorted(writes.before.items())
        if version is not None
    ]
    writes.tx.update(provenance)
    return Decision(
        action=action,
        provenance=provenance["id"],
        written=[f"{r.type}/{r.id}/_history/{r.version}" for r in targets],
        patients=patients,
    )
