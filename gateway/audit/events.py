"""An ``AccessRecord`` as an AuditEvent in the shape of IHE Basic Audit Log Patterns (BALP).

* ``type``: ``rest`` (audit-event-type) for FHIR RESTful interactions; DICOM ``110107``
  Import (ingest, quarantine replay), ``110106`` Export (dead-letter replay) or ``110100``
  Application Activity (other admin functions) for the gateway's own endpoints;
* ``subtype``: the restful-interaction code, or the gateway action (``urn:chw-gateway:audit-action``);
* ``agent``: the client (``Source Role ID``, ``requestor``, ``who.identifier`` in
  ``CLIENT_SYSTEM``, its IP address), then the gateway (``Destination Role ID``);
* ``entity``: the query (base64 parameters), the patients concerned (BALP patient
  entity: type 1 Person, role 1 Patient) and the resources touched (type 2, role 4),
  at most ``max_entities``; when more were touched the last entity says how many are not listed.
"""

from __future__ import annotations

import base64
from typing import Any

from gateway.fhir import CLIENT_SYSTEM
from gateway.search import IndexRows, date_range, format_instant, normalise, split_reference

from .record import AccessRecord

__all__ = ["CLIENT_SYSTEM", "audit_event", "audit_index"]
ACTION_SYSTEM = "urn:chw-gateway:audit-action"
GATEWAY = "chw-gateway"
_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_RESTFUL = "http://hl7.org/fhir/restful-interaction"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"

_REST = {"system": _EVENT_TYPE, "code": "rest", "display": "Restful Operation"}
_DICOM = {
    "import": {"system": _DCM, "code": "110107", "display": "Import"},
    "export": {"system": _DCM, "code": "110106", "display": "Export"},
    "activity": {"system": _DCM, "code": "110100", "display": "Application Activity"},
}
#: Gateway actions and their DICOM event type.
ACTION_TYPES = {
    "ingest": "import",
    "quarantine-replay": "import",
    "dead-letter-replay": "export",
}
_SYSTEM_OBJECT = {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"}
_PERSON = {"system": _ENTITY_TYPE, "code": "1", "display": "Person"}
_ROLES = {
    "patient": {"system": _ROLE, "code": "1", "display": "Patient"},
    "resource": {"system": _ROLE, "code": "4", "display": "Domain Resource"},
    "query": {"system": _ROLE, "code": "24", "display": "Query"},
    "quarantine": {"system": _ROLE, "code": "3", "display": "Report"},
    "source": {"system": _ROLE, "code": "17", "display": "Data Repository"},
    "destination": {"system": _ROLE, "code": "16", "display": "Data Destination"},
    "dead-letter": {"system": _ROLE, "code": "20", "display": "Job"},
    "identity-review": {"system": _ROLE, "code": "4", "display": "Domain Resource"},  # the pair's review Task
}
_CLIENT_ROLE = {"system": _DCM, "code": "110153", "display": "Source Role ID"}
_SERVER_ROLE = {"system": _DCM, "code": "110152", "display": "Destination Role ID"}


def audit_event(record: AccessRecord, max_entities: int = 50) -> dict[str, Any]:
    """The AuditEvent resource of one access (no id: the store assigns it)."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": _REST if record.rest else _DICOM[ACTION_TYPES.get(record.interaction, "activity")],
        "subtype": [{"system": _RESTFUL if record.rest else ACTION_SYSTEM, "code": record.interaction}],
        "action": record.action,
        "recorded": format_instant(record.recorded),
        "outcome": record.outcome,
        "outcomeDesc": f"HTTP {record.status}" if record.status is not None else "internal error",
        "agent": [_client(record), {"type": {"coding": [_SERVER_ROLE]}, "who": {"display": GATEWAY},
                                    "requestor": False}],
        "source": {"observer": {"display": GATEWAY}, "type": [{"system": _SOURCE_TYPE, "code": "4",
                                                              "display": "Application Server"}]},
    }  # fmt: skip
    entities = _entities(record, max_entities)
    if entities:
        event["entity"] = entities
    return event


def _client(record: AccessRecord) -> dict[str, Any]:
    agent: dict[str, Any] = {"type": {"coding": [_CLIENT_ROLE]}}
    if record.client is not None:
        agent["who"] = {"identifier": {"system": CLIENT_SYSTEM, "value": record.client}, "display": record.client}
        agent["altId"] = record.client
        agent["name"] = record.client
    else:
        agent["who"] = {"display": "unauthenticated"}
    agent["requestor"] = True
    if record.address:
        agent["network"] = {"address": record.address, "type": "2"}
    return agent


def _entities(record: AccessRecord, limit: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if record.query is not None:
        query = base64.b64encode(record.query.encode()).decode()
        out.append({"type": _SYSTEM_OBJECT, "role": _ROLES["query"], "query": query})
    for kind, name in record.objects:
        out.append({"what": {"identifier": {"system": f"urn:chw-gateway:{kind}", "value": name}},
                    "type": _SYSTEM_OBJECT, "role": _ROLES[kind], "name": f"{kind}/{name}"})  # fmt: skip
    for pid in sorted(record.patients):
        out.append({"what": {"reference": f"Patient/{pid}"}, "type": _PERSON, "role": _ROLES["patient"]})
    seen: set[str] = set()
    for ref in record.resources:
        if ref not in seen:
            seen.add(ref)
            out.append({"what": {"reference": ref}, "type": _SYSTEM_OBJECT, "role": _ROLES["resource"]})
    if len(out) > limit:
        left = len(out) - limit + 1
        out = out[: limit - 1]
        out.append({"type": _SYSTEM_OBJECT, "description": f"{left} more entities not listed"})
    return out


def audit_index(event: dict[str, Any]) -> IndexRows:
    """The search index rows of an ``audit_event`` result, built directly from its known shape.

    The store would extract the same rows with the generic FHIRPath extraction of every
    AuditEvent search parameter, at ~10x the cost; ``tests/audit/test_events.py`` holds the
    two equal for every kind of event.
    """
    rows = IndexRows()
    token, string, reference = rows.token, rows.string, rows.reference
    kind = event["type"]
    token.append(("type", kind["system"], kind["code"]))
    for coding in event["subtype"]:
        token.append(("subtype", coding["system"], coding["code"]))
    token.append(("action", None, event["action"]))
    token.append(("outcome", None, event["outcome"]))
    low, high = date_range(event["recorded"])
    rows.date.append(("date", low, high))
    for agent in event["agent"]:
        name = agent.get("name")
        if name is not None:
            string.append(("agent-name", normalise(name), name))
            token.append(("altid", None, agent["altId"]))
        network = agent.get("network")
        if network is not None:
            string.append(("address", normalise(network["address"]), network["address"]))
    for entity in event.get("entity", ()):
        what = entity.get("what")
        target = what.get("reference") if what is not None else None
        if target is not None:
            parsed = split_reference(target)
            ttype, tid = parsed if parsed is not None else (None, None)
            reference.append(("entity", ttype, tid, target))
            if ttype == "Patient":
                reference.append(("patient", ttype, tid, target))
        for param, key in (("entity-type", "type"), ("entity-role", "role")):
            coding = entity.get(key)
            if coding is not None:
                token.append((param, coding["system"], coding["code"]))
        name = entity.get("name")
        if name is not None:
            string.append(("entity-name", normalise(name), name))
    return rows
