"""The gateway's own OpenAPI document, filled in where the FHIR routes leave it thin.

The FHIR handlers take a raw ``Request`` (FHIR bodies and search parameters are too open
for FastAPI's parameter models), so ``/openapi.json`` declares only path parameters.
``enrich`` adds what a client actually sends to each operation — search and paging
parameters, the FHIR headers, and JSON bodies shaped like resources, Bundles and JSON
Patches — so schemathesis generates requests that reach past routing. Path parameters
get the resource types and the FHIR id pattern: positive cases route to real handlers,
negative cases (anything else) must be refused cleanly. Only the FHIR API is kept
(``/fhir/…``); the admin and ingest routers are other suites' business.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.robustness.seeds import FUZZ_TYPES, KNOWN_OBSERVATION_ID, KNOWN_PATIENT_ID, KNOWN_SYSTEM

FHIR_JSON = "application/fhir+json"
_TYPES = [*FUZZ_TYPES, "Bundle", "Binary", "Foo"]
_ID = r"^[A-Za-z0-9\-.]{1,64}$"
_SEARCH = [
    "_count",
    "_offset",
    "_sort",
    "_summary",
    "_elements",
    "_include",
    "_revinclude",
    "_total",
    "_id",
    "_lastUpdated",
    "_format",
    "identifier",
    "birthdate",
    "family",
    "name",
    "gender",
    "subject",
    "date",
    "code",
    "value-quantity",
    "_has:Observation:patient:code",
    "subject:Patient.name",
    "_since",
]
_HEADERS: dict[str, dict[str, Any]] = {
    "If-Match": {"type": "string", "pattern": r'^W/"[0-9]{1,2}"$'},
    "If-None-Match": {"type": "string", "pattern": r'^W/"[0-9]{1,2}"$'},
    "If-None-Exist": {"enum": [f"identifier={KNOWN_SYSTEM}|k1", "identifier=urn:x|1", "_id=nobody"]},
    "Prefer": {
        "enum": ["return=minimal", "return=representation", "return=OperationOutcome", "handling=strict"]
    },
    "Accept": {"enum": ["application/fhir+json", "application/json", "*/*", "application/fhir+xml"]},
}

_RESOURCE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {
        "resourceType": {"enum": _TYPES},
        "id": {"anyOf": [{"type": "string", "pattern": _ID}, {}]},
        "active": {"type": "boolean"},
        "gender": {"enum": ["male", "female", "other", "unknown", "dog"]},
        "birthDate": {"type": "string"},
        "status": {"type": "string"},
        "name": {"type": "array", "items": {"type": "object", "properties": {
            "family": {"type": "string"}, "given": {"type": "array", "items": {"type": "string"}}}}},
        "identifier": {"type": "array", "items": {"type": "object", "properties": {
            "system": {"type": "string"}, "value": {"type": "string"}}}},
        "subject": {"type": "object", "properties": {"reference": {"type": "string"}}},
    },
}  # fmt: skip
_BUNDLE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType", "type"],
    "properties": {
        "resourceType": {"enum": ["Bundle"]},
        "type": {"enum": ["batch", "transaction", "collection"]},
        "entry": {"type": "array", "maxItems": 4, "items": {"type": "object", "properties": {
            "fullUrl": {"type": "string"},
            "resource": _RESOURCE_BODY,
            "request": {"type": "object", "required": ["method", "url"], "properties": {
                "method": {"enum": ["GET", "POST", "PUT", "DELETE", "PATCH"]},
                "url": {"type": "string"},
                "ifNoneExist": {"type": "string"},
                "ifMatch": {"type": "string"}}}}}},
    },
}  # fmt: skip
_PATCH_BODY: dict[str, Any] = {
    "type": "array",
    "items": {"type": "object", "required": ["op", "path"], "properties": {
        "op": {"enum": ["add", "remove", "replace", "move", "copy", "test"]},
        "path": {"type": "string"}, "from": {"type": "string"}, "value": {}}},
}  # fmt: skip


def _body(schema: dict[str, Any], media: str = FHIR_JSON) -> dict[str, Any]:
    return {"required": False, "content": {media: {"schema": schema}}}


def _param(name: str, where: str) -> dict[str, Any]:
    return {"name": name, "in": where, "required": False, "schema": {"type": "string"}}


def enrich(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of the gateway's OpenAPI document with FHIR parameters, headers and bodies declared."""
    out = copy.deepcopy(spec)
    out["paths"] = {path: ops for path, ops in out["paths"].items() if path.startswith("/fhir")}
    for path, operations in out["paths"].items():
        for method, operation in operations.items():
            params: list[dict[str, Any]] = operation.setdefault("parameters", [])
            for param in params:
                if param["in"] != "path":
                    continue
                if param["name"] == "rtype":
                    param["schema"] = {"enum": _TYPES}
                elif param["name"] == "rid":
                    param["schema"] = {
                        "anyOf": [
                            {"enum": [KNOWN_PATIENT_ID, KNOWN_OBSERVATION_ID]},
                            {"type": "string", "pattern": _ID},
                        ]
                    }
                elif param["name"] == "vid":
                    param["schema"] = {"type": "string", "pattern": r"^[0-9]{1,3}$"}
            params += [{**_param(name, "header"), "schema": schema} for name, schema in _HEADERS.items()]
            if method in ("get", "delete", "put") and "{rid}" not in path:
                params += [_param(name, "query") for name in _SEARCH]
            if path == "/fhir/":
                operation["requestBody"] = _body(_BUNDLE_BODY)
            elif method == "patch":
                operation["requestBody"] = _body(_PATCH_BODY, "application/json-patch+json")
            elif method in ("post", "put") and not path.endswith("_search"):
                operation["requestBody"] = _body(_RESOURCE_BODY)
    return out
