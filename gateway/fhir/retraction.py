"""Taking back a resource: the status that says "this should not have been recorded".

When an edit or a deletion of a source record no longer produces a resource, the gateway
retracts it. Where R4 gives the resource type a status for that, the retraction is a new
version with that status, so every reader (and every destination) learns that the earlier
version is void, and the history keeps what was once said; elsewhere it is a delete.

==========================================  ==============================================
resource type                               retracted version
==========================================  ==============================================
Observation, MedicationDispense,            ``status: entered-in-error``
Encounter, Procedure, Immunization,
MedicationRequest, MedicationAdministration,
MedicationStatement, DiagnosticReport,
QuestionnaireResponse, DocumentReference,
Communication, CarePlan, EpisodeOfCare,
Flag, Appointment, Consent, NutritionOrder,
RiskAssessment, DetectedIssue, ClinicalImpression,
FamilyMemberHistory
Condition, AllergyIntolerance               ``verificationStatus`` entered-in-error
                                            (``clinicalStatus`` removed: con-5, ait-1)
ServiceRequest, CommunicationRequest,       ``status: revoked``
DeviceRequest
Task                                        ``status: cancelled``
Goal                                        ``lifecycleStatus: entered-in-error``
anything else (Patient, Location, …)        a delete
==========================================  ==============================================

A request someone already brought to an end (a Task a clinic ``completed``, a ServiceRequest
``completed``) keeps its status: a CHW's later edit does not undo what a facility did.
Events (an Observation, a MedicationDispense ``completed`` by the CHW) are always voided.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RETRACTED_BY_STATUS", "can_retract_by_status", "retracted_version"]

_ENTERED_IN_ERROR = "entered-in-error"
_STATUS_ENTERED_IN_ERROR = (
    "Observation MedicationDispense Encounter Procedure Immunization MedicationRequest "
    "MedicationAdministration MedicationStatement DiagnosticReport QuestionnaireResponse "
    "DocumentReference Communication CarePlan EpisodeOfCare Flag Appointment Consent "
    "NutritionOrder RiskAssessment DetectedIssue ClinicalImpression FamilyMemberHistory"
).split()

#: resource type → (element, code) of its retracted version.
RETRACTED_BY_STATUS: dict[str, tuple[str, str]] = {
    **{rtype: ("status", _ENTERED_IN_ERROR) for rtype in _STATUS_ENTERED_IN_ERROR},
    "Condition": ("verificationStatus", _ENTERED_IN_ERROR),
    "AllergyIntolerance": ("verificationStatus", _ENTERED_IN_ERROR),
    "ServiceRequest": ("status", "revoked"),
    "CommunicationRequest": ("status", "revoked"),
    "DeviceRequest": ("status", "revoked"),
    "Task": ("status", "cancelled"),
    "Goal": ("lifecycleStatus", _ENTERED_IN_ERROR),
}

_VERIFICATION_SYSTEM = {
    "Condition": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
    "AllergyIntolerance": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
}

# Statuses that end a request's life (a ServiceRequest or Task): retracting leaves them.
_FINAL = frozenset({"entered-in-error", "revoked", "cancelled", "completed", "failed", "rejected", "stopped"})


def can_retract_by_status(rtype: str) -> bool:
    """Whether R4 gives ``rtype`` a status that marks it void (else it is deleted)."""
    return rtype in RETRACTED_BY_STATUS


def retracted_version(resource: dict[str, Any]) -> dict[str, Any] | None:
    """The resource with its retraction status, or None when it needs no new version.

    None means either that the status already ends the resource (see the module docstring)
    or that the type has no such status (callers then delete it).
    """
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or rtype not in RETRACTED_BY_STATUS:
        return None
    element, code = RETRACTED_BY_STATUS[rtype]
    out = {k: v for k, v in resource.items() if k not in ("meta", "text")}
    if "meta" in resource:
        meta = {k: v for k, v in resource["meta"].items() if k not in ("versionId", "lastUpdated")}
        if meta:
            out["meta"] = meta
    if rtype in _VERIFICATION_SYSTEM:
        if code in _codes(resource.get(element)):
            return None
        out[element] = {"coding": [{"system": _VERIFICATION_SYSTEM[rtype], "code": code}]}
        out.pop("clinicalStatus", None)  # con-5 / ait-1: no clinical status once entered in error
        return out
    status = resource.get(element)
    if status == code or (code != _ENTERED_IN_ERROR and status in _FINAL):
        return None  # a request someone else already ended (a Task a clinic completed) stays so
    out[element] = code
    return out


def _codes(concept: Any) -> set[str]:
    if not isinstance(concept, dict):
        return set()
    return {c["code"] for c in concept.get("coding", []) if isinstance(c, dict) and isinstance(c.get("code"), str)}
