"""What the FHIR2 module does with a resource a client writes: resolve it against the site, or refuse it.

Each function takes the client's JSON and returns the resource as OpenMRS would hand it
back (OpenMRS ids and codings), or raises ``Refused`` with the HTTP status and the message
the module answers with. Validation failures of the OpenMRS API answer 422; a malformed
request (wrong type, id mismatch) 400.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from openmrs_sandbox.site import (
    ENCOUNTER_TAG_SYSTEM,
    ENCOUNTER_TYPE_SYSTEM,
    IDENTIFIER_LOCATION_URL,
    TASK_IDENTIFIER_SYSTEM,
    Site,
)

Json = dict[str, Any]
Exists = Callable[[str, str], bool]  # (resource type, id) -> live at this server?

TASK_STATUSES = frozenset({
    "draft", "requested", "received", "accepted", "rejected", "ready", "cancelled", "in-progress", "on-hold",
    "failed", "completed", "entered-in-error", "unknown",
})  # fmt: skip


class Refused(Exception):
    """The module's refusal: an HTTP status, a message and the element at fault."""

    def __init__(self, status: int, message: str, expression: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.expression = expression


def _target(reference: Any, rtype: str, exists: Exists, where: str) -> str:
    """The id a reference to an ``rtype`` at this server points at; 422 if it is not there."""
    ref = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(ref, str) or not ref.startswith(f"{rtype}/"):
        raise Refused(422, f"{where} must reference a {rtype}", where)
    rid = ref.split("/", 1)[1]
    if not exists(rtype, rid):
        raise Refused(422, f"{where}: {rtype} {rid} not found", where)
    return rid


def patient(body: Json, site: Site, exists: Exists) -> Json:
    """A Patient: identifiers resolved to identifier types (unknown types dropped), name and gender required."""
    identifiers = []
    for index, item in enumerate(body.get("identifier") or []):
        kind = site.identifier_type(item.get("system"), (item.get("type") or {}).get("text"))
        if kind is None or not item.get("value"):
            continue  # the module drops identifiers whose type it cannot resolve
        location = next(
            (
                ext.get("valueReference")
                for ext in item.get("extension") or []
                if ext.get("url") == IDENTIFIER_LOCATION_URL
            ),
            None,
        )
        location_id = None
        if location is not None:
            location_id = _target(location, "Location", exists, f"Patient.identifier[{index}].extension")
        elif kind.location_required:
            raise Refused(
                422,
                f"Patient.identifier[{index}]: identifier type '{kind.name}' requires a location",
                f"Patient.identifier[{index}]",
            )
        kept: Json = {
            "id": str(uuid.uuid4()),
            "use": item.get("use") or "usual",
            "type": {"coding": [{"code": kind.uuid}], "text": kind.name},
            "value": item["value"],
        }
        system = next((s for s, t in site.identifier_systems.items() if t == kind.uuid), None)
        if system:
            kept["system"] = system
        if location_id:
            kept["extension"] = [
                {"url": IDENTIFIER_LOCATION_URL, "valueReference": {"reference": f"Location/{location_id}"}}
            ]
        identifiers.append(kept)
    if not identifiers:
        raise Refused(422, "Patient is missing an identifier of a known identifier type", "Patient.identifier")
    if not body.get("name"):
        raise Refused(422, "Patient.name is required", "Patient.name")
    if body.get("gender") not in ("male", "female", "other", "unknown"):
        raise Refused(422, "Patient.gender is required", "Patient.gender")
    copied = ("name", "gender", "birthDate", "active", "address", "telecom")
    kept_fields: Json = {k: body[k] for k in copied if k in body}
    return {"resourceType": "Patient", **kept_fields, "identifier": identifiers}


def encounter(body: Json, site: Site, exists: Exists) -> Json:
    """An Encounter: subject, a known encounter type (by uuid), a known location and a start are required."""
    subject = _target(body.get("subject"), "Patient", exists, "Encounter.subject")
    codes = [
        c.get("code")
        for t in body.get("type") or []
        for c in t.get("coding") or []
        if c.get("system") == ENCOUNTER_TYPE_SYSTEM
    ]
    kind = next((code for code in codes if code in site.encounter_types), None)
    if kind is None:
        raise Refused(
            422,
            "Encounter.type: no encounter type of this site (coding system "
            f"{ENCOUNTER_TYPE_SYSTEM}, code = encounter type uuid)",
            "Encounter.type",
        )
    places = [entry.get("location") for entry in body.get("location") or []]
    if not places:
        raise Refused(422, "Encounter.location is required", "Encounter.location")
    location = _target(places[0], "Location", exists, "Encounter.location[0].location")
    start = (body.get("period") or {}).get("start")
    if not start:
        raise Refused(422, "Encounter.period.start (the encounter datetime) is required", "Encounter.period.start")
    found: Json = {
        "resourceType": "Encounter",
        "meta": {"tag": [{"system": ENCOUNTER_TAG_SYSTEM, "code": "encounter", "display": "Encounter"}]},
        "status": "unknown",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [{"coding": [{"system": ENCOUNTER_TYPE_SYSTEM, "code": kind, "display": site.encounter_types[kind]}]}],
        "subject": {"reference": f"Patient/{subject}", "type": "Patient"},
        "location": [{"location": {"reference": f"Location/{location}", "display": site.locations.get(location)}}],
        "period": {"start": start},
    }
    if body.get("partOf"):
        found["partOf"] = {"reference": f"Encounter/{_target(body['partOf'], 'Encounter', exists, 'Encounter.partOf')}"}
    return found


def observation(body: Json, site: Site, exists: Exists) -> Json:
    """An Observation: a concept the site knows (uuid or mapped code), a subject, optionally an encounter."""
    codings = (body.get("code") or {}).get("coding") or []
    concept = next((c for c in (site.concept(x.get("system"), x.get("code")) for x in codings) if c), None)
    if concept is None:
        raise Refused(422, "Observation.code: no concept of this site matches any coding", "Observation.code")
    subject = _target(body.get("subject"), "Patient", exists, "Observation.subject")
    codes = [{"code": concept}] + [{"system": s, "code": c} for s, c in site.concepts[concept].items()]
    found: Json = {
        "resourceType": "Observation",
        "status": body.get("status") or "final",
        "code": {"coding": codes},
        "subject": {"reference": f"Patient/{subject}", "type": "Patient"},
    }
    if body.get("encounter"):
        found["encounter"] = {
            "reference": f"Encounter/{_target(body['encounter'], 'Encounter', exists, 'Observation.encounter')}"
        }
    for key in ("effectiveDateTime", "valueQuantity", "valueString", "valueBoolean", "valueCodeableConcept"):
        if key in body:
            found[key] = body[key]
    return found


def task(body: Json, site: Site, exists: Exists) -> Json:
    """A Task (``fhir_task``): intent only ``order``, a known status, references to objects of this server."""
    intent = body.get("intent") or "order"
    if intent != "order":
        raise Refused(422, f"Task.intent: only 'order' is supported (got '{intent}')", "Task.intent")
    status = body.get("status")
    if status not in TASK_STATUSES:
        raise Refused(422, f"Task.status: '{status}' is not a task status", "Task.status")
    found: Json = {"resourceType": "Task", "status": status, "intent": "order"}
    references = {"for": "Patient", "encounter": "Encounter", "location": "Location"}
    for key, rtype in references.items():
        if key in body:
            found[key] = {"reference": f"{rtype}/{_target(body[key], rtype, exists, f'Task.{key}')}"}
    for key in ("basedOn", "partOf"):
        for index, item in enumerate(body.get(key) or []):
            ref = str(item.get("reference") or "")
            rtype = ref.split("/", 1)[0]
            _target(item, rtype or "?", exists, f"Task.{key}[{index}]")
            found.setdefault(key, []).append({"reference": ref})
    if "owner" in body:
        owner = body["owner"]
        ref = str(owner.get("reference") or "")
        if ref:
            _target(owner, ref.split("/", 1)[0], exists, "Task.owner")
        found["owner"] = {k: v for k, v in owner.items() if k in ("reference", "display")}
    for key in ("executionPeriod", "note", "input", "authoredOn", "lastModified", "code", "description", "priority"):
        if key in body:
            found[key] = body[key]
    return found


def identified(resource: Json, rid: str) -> Json:
    """``resource`` with its id (and, for a Task, the id as its identifier, as the module does)."""
    out = {
        "resourceType": resource["resourceType"],
        "id": rid,
        **{k: v for k, v in resource.items() if k != "resourceType"},
    }
    if resource["resourceType"] == "Task":
        out["identifier"] = [{"system": TASK_IDENTIFIER_SYSTEM, "value": rid}]
    return out


WRITERS: dict[str, Callable[[Json, Site, Exists], Json]] = {
    "Patient": patient, "Encounter": encounter, "Observation": observation, "Task": task,
}  # fmt: skip
# Exposed, but read-only in the module (ServiceRequest: lab orders only; MedicationRequest: no create/update).
READ_ONLY = frozenset({"ServiceRequest", "MedicationRequest", "RelatedPerson", "ValueSet", "EpisodeOfCare"})
