"""The CapabilityStatement: the single source of truth for what the FHIR API offers.

It is generated from the code's own tables (the search registry and the interaction
list below), so it cannot claim more than the server does; the conformance suite
(``conformance.suite``) reads it back from ``/metadata`` and checks every claim.
"""

from __future__ import annotations

from typing import Any

from gateway import __version__
from gateway.r4.types import RESOURCE_TYPES
from gateway.search.registry import SearchRegistry

FHIR_VERSION = "4.0.1"

# What every resource type supports (the REST routes in gateway/api/fhir_*.py).
TYPE_INTERACTIONS = (
    "read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type",
)  # fmt: skip
SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system")
# The audit trail: written by the gateway alone, read and searched by admin clients.
AUDIT_TYPE = "AuditEvent"
AUDIT_INTERACTIONS = ("read", "vread", "history-instance", "history-type", "search-type")
RESULT_PARAMS = ("_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude")
OPERATIONS = (
    {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
)
# Every type a client may write (gateway/api/fhir_validate.py): the checks a create or update makes.
VALIDATE = {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
# FHIR Bulk Data Access 2.0 (gateway/api/bulk_export.py).
BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition"
EXPORT_DOC = ("Bulk Data Access 2.0 (Prefer: respond-async; GET, or POST with a Parameters body; _outputFormat,"
              " _type, _since, _typeFilter, and patient at Patient and Group level). The custom"
              " parameter _deidentify=research exports a de-identified copy: direct identifiers removed, dates"
              " shifted per patient by a keyed offset, birth dates reduced to the year (removed past 89), free"
              " text dropped, ids replaced by stable keyed pseudonyms.")
SYSTEM_OPERATIONS = ({"name": "export", "definition": f"{BULK}/export", "documentation": EXPORT_DOC},)
PATIENT_EXPORT = {"name": "export", "definition": f"{BULK}/patient-export", "documentation": EXPORT_DOC}
GROUP_EXPORT = {"name": "export", "definition": f"{BULK}/group-export", "documentation": EXPORT_DOC}


def capability_statement(registry: SearchRegistry, base_url: str, date: str) -> dict[str, Any]:
    """Build the CapabilityStatement for this gateway."""
    resources: list[dict[str, Any]] = []
    # _revinclude=Source:param works on every type the reference parameter may point at.
    revincludes: dict[str, list[str]] = {}
    for source in sorted(RESOURCE_TYPES):
        for p in sorted(registry.params(source).values(), key=lambda p: p.code):
            if p.type == "reference":
                for target in p.targets:
                    revincludes.setdefault(target, []).append(f"{source}:{p.code}")
    for rtype in sorted(RESOURCE_TYPES):
        params = registry.params(rtype)
        entry: dict[str, Any] = {
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "searchParam": [
                {"name": p.code, "definition": p.url, "type": p.type}
                for p in sorted(params.values(), key=lambda p: p.code)
            ],
        }
        includes = sorted(f"{rtype}:{p.code}" for p in params.values() if p.type == "reference")
        if includes:  # FHIR JSON never has empty arrays
            entry["searchInclude"] = includes
        if revincludes.get(rtype):
            entry["searchRevInclude"] = revincludes[rtype]
        entry["operation"] = [VALIDATE]
        if rtype == "Patient":
            entry["operation"] = [*OPERATIONS, PATIENT_EXPORT, VALIDATE]
        if rtype == "Group":
            entry["operation"] = [GROUP_EXPORT, VALIDATE]
        if rtype == AUDIT_TYPE:
            entry.update({
                "documentation": "The gateway's audit trail (one AuditEvent per access, IHE BALP): read and"
                                 " search need the admin scope; nobody writes it through the API.",
                "interaction": [{"code": code} for code in AUDIT_INTERACTIONS],
                "updateCreate": False, "conditionalCreate": False, "conditionalUpdate": False,
                "conditionalDelete": "not-supported",
            })  # fmt: skip
            del entry["operation"]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "id": "chw-gateway",
        "url": f"{base_url}/metadata",
        "version": __version__,
        "name": "CHWFhirGateway",
        "title": "CHW FHIR gateway",
        "status": "active",
        "experimental": False,
        "date": date,
        "publisher": "CHW FHIR gateway contributors",
        "kind": "instance",
        "software": {"name": "chw-fhir-gateway", "version": __version__},
        "implementation": {"description": "FHIR interoperability gateway for community health programs",
                           "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Result parameters: " + ", ".join(RESULT_PARAMS) + ". Unknown search "
                "parameters are ignored unless the request says Prefer: handling=strict.",
                "security": {
                    "cors": False,
                    "service": [{"coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR"}]}],
                    "description": "Bearer tokens with SMART v2 system scopes (system/Type.cruds): a registered"
                    " client's own token, or an access token from SMART Backend Services (client_credentials"
                    " with an RS384/ES384 signed assertion; the token endpoint is in the oauth-uris extension"
                    " and .well-known/smart-configuration).",
                },
                "resource": resources,
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
                "operation": list(SYSTEM_OPERATIONS),
                "searchParam": [
                    {"name": "_id", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id", "type": "token"},
                    {"name": "_lastUpdated", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
                     "type": "date"},
                ],
            }
        ],
    }
