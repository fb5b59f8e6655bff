"""The kick-off request of ``$export``: its parameters checked and turned into the searches to run.

Each exported type is searched for the client, through the same parser and checks as a
search (``QueryParser.parse`` with the client's ``SearchAccess``): its scopes decide the
types, its data policy rides on every query, and ``_typeFilter`` is a search query string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from gateway.errors import FhirError
from gateway.r4 import RESOURCE_TYPES
from gateway.search import (
    RESULT_PARAMS,
    DateFormatError,
    QueryParser,
    SearchAccess,
    SearchError,
    SearchQuery,
    date_range,
)

OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
PARAMETERS = ("_outputFormat", "_type", "_since", "_typeFilter", "_deidentify", "patient")
# How each parameter of a POST kick-off's Parameters body carries its value (Bulk Data 2.0).
_VALUE_KEYS = ("valueString", "valueInstant", "valueCode", "valueDateTime", "valueUri")
_PATIENT_REF = re.compile(r"^Patient/([A-Za-z0-9\-.]{1,64})$")
# The audit trail is the gateway's record about access, not health data: exported only when named.
_NOT_BY_DEFAULT = frozenset({"AuditEvent"})


@dataclass(slots=True)
class ExportRequest:
    """What to export: per type, the searches whose matches (together) make its file."""

    level: str  # system | patient | group
    group: str | None
    queries: dict[str, list[SearchQuery]] = field(default_factory=dict)
    since: str | None = None
    profile: str | None = None
    patients: tuple[str, ...] = ()  # ``patient``: only these compartments (ids)
    # Named types that cannot be exported at this level, with why: each gets an OperationOutcome in error[].
    refused: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # as asked, kept with the job


def parse_kickoff(
    items: Sequence[tuple[str, str]],
    *,
    level: str,
    group: str | None,
    access: SearchAccess,
    parser: QueryParser,
    profiles: Mapping[str, object],
    deidentify_ready: bool,
) -> ExportRequest:
    """Check the kick-off parameters (400 naming the parameter at fault; 403 for a type the
    client may not search) and build the searches."""
    for key, _ in items:
        if key not in PARAMETERS:
            raise FhirError(f"$export does not support the parameter {key[:64]!r} (it takes {', '.join(PARAMETERS)})",
                            status=400, code="not-supported", expression=[key[:64]])
    values: dict[str, list[str]] = {}
    for key, value in items:
        values.setdefault(key, []).append(value)
    for key in ("_outputFormat", "_since", "_deidentify"):
        if len(values.get(key, [])) > 1:
            raise FhirError(f"{key} may be given once", status=400, code="invalid", expression=[key])
    fmt = values.get("_outputFormat", ["application/fhir+ndjson"])[0]
    if fmt not in OUTPUT_FORMATS:
        raise FhirError(f"_outputFormat {fmt[:64]!r} is not supported (use application/fhir+ndjson)",
                        status=400, code="not-supported", expression=["_outputFormat"])
    named = [t.strip() for raw in values.get("_type", []) for t in raw.split(",") if t.strip()]
    for rtype in named:
        if rtype not in RESOURCE_TYPES:
            raise FhirError(f"_type: {rtype[:64]!r} is not a FHIR R4 resource type", status=400, code="invalid",
                            expression=["_type"])
        access.require_search(rtype, "_type")
    since = values.get("_since", [None])[0]
    since_items: list[tuple[str, str]] = []
    if since is not None:
        try:
            date_range(since)
        except DateFormatError as exc:
            raise FhirError(f"_since: {exc}", status=400, code="invalid", expression=["_since"]) from exc
        since_items = [("_lastUpdated", f"ge{since}")]
    profile = values.get("_deidentify", [None])[0]
    if profile is not None:
        if profile not in profiles:
            raise FhirError(f"_deidentify: no profile {profile[:64]!r} (this server has {', '.join(sorted(profiles))})",
                            status=400, code="not-supported", expression=["_deidentify"])
        if not deidentify_ready:
            raise FhirError("_deidentify: de-identified export is not configured on this server"
                            " (bulk_export.deidentify_key)", status=400, code="not-supported",
                            expression=["_deidentify"])
    patients = _patients(values.get("patient", []), level)
    if level == "system":
        candidates = [t for t in sorted(RESOURCE_TYPES) if t not in _NOT_BY_DEFAULT]
    else:  # a compartment holds Patients and what can refer to them
        linked = parser.registry.patient_linked()
        candidates = [t for t in sorted(RESOURCE_TYPES) if t in linked and t not in _NOT_BY_DEFAULT]
    types = list(dict.fromkeys(named)) if named else [t for t in candidates if access.can(t, "s")]
    request = ExportRequest(level=level, group=group, since=since, profile=profile, patients=patients)
    if level != "system":
        # A type outside the Patient compartment has nothing in one: say so in error[], not by silence.
        linked = parser.registry.patient_linked()
        for rtype in [t for t in types if t != "Patient" and t not in linked]:
            request.refused[rtype] = (f"{rtype} is not in the Patient compartment: a {level}-level export"
                                      " has none of it")
            types.remove(rtype)
    for raw in values.get("_typeFilter", []):
        rtype, mark, query_string = raw.partition("?")
        if not mark or rtype not in RESOURCE_TYPES:
            raise FhirError(f"_typeFilter: {raw[:80]!r} is not Type?search-parameters", status=400, code="invalid",
                            expression=["_typeFilter"])
        if rtype not in types:
            raise FhirError(f"_typeFilter: {rtype} is not among the exported types", status=400, code="invalid",
                            expression=["_typeFilter"])
        criteria = parse_qsl(query_string, keep_blank_values=True)
        for key, _ in criteria:
            base = key.split(":", 1)[0]
            if key in RESULT_PARAMS or base in ("_include", "_revinclude", "_sort", "_count", "_offset"):
                raise FhirError(f"_typeFilter: {key[:64]!r} is not a search criterion", status=400, code="invalid",
                                expression=["_typeFilter"])
        request.queries.setdefault(rtype, []).append(_parse(parser, access, rtype, [*criteria, *since_items]))
    for rtype in types:
        if rtype not in request.queries:
            request.queries[rtype] = [_parse(parser, access, rtype, since_items)]
    request.params = {"level": level, "group": group, "types": named or None, "since": since,
                      "typeFilter": values.get("_typeFilter") or None, "deidentify": profile,
                      "patient": list(patients) or None}
    return request


def parameters_items(body: Any) -> list[tuple[str, str]]:
    """The kick-off parameters of a POST ``$export``'s FHIR ``Parameters`` body, as (name, value)
    pairs like a query string's (``patient`` as the reference); 400 naming the part at fault."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError("a POST $export takes a FHIR Parameters resource", status=400, code="invalid",
                        expression=["Parameters"])
    items: list[tuple[str, str]] = []
    for index, part in enumerate(body.get("parameter") or []):
        where = f"Parameters.parameter[{index}]"
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str):
            raise FhirError(f"{where}.name is required", status=400, code="required", expression=[f"{where}.name"])
        if name == "patient":
            reference = (part.get("valueReference") or {}).get("reference")
            if not isinstance(reference, str):
                raise FhirError(f"{where}: patient takes a valueReference to a Patient", status=400, code="invalid",
                                expression=[f"{where}.valueReference"])
            items.append((name, reference))
            continue
        value = next((part[key] for key in _VALUE_KEYS if isinstance(part.get(key), str)), None)
        if value is None:
            raise FhirError(f"{where}: {name[:64]} takes a valueString (or valueInstant/valueCode)", status=400,
                            code="invalid", expression=[f"{where}"])
        items.append((name, value))
    return items


def _patients(references: list[str], level: str) -> tuple[str, ...]:
    """The Patient ids of the ``patient`` parameter (Patient- and Group-level exports only)."""
    if references and level == "system":
        raise FhirError("patient: only a Patient- or Group-level export takes patients", status=400, code="invalid",
                        expression=["patient"])
    ids: list[str] = []
    for reference in (ref.strip() for raw in references for ref in raw.split(",") if ref.strip()):
        match = _PATIENT_REF.match(reference)
        if match is None:
            raise FhirError(f"patient: {reference[:80]!r} is not a reference Patient/<id>", status=400,
                            code="invalid", expression=["patient"])
        ids.append(match.group(1))
    return tuple(dict.fromkeys(ids))


def _parse(parser: QueryParser, access: SearchAccess, rtype: str, items: list[tuple[str, str]]) -> SearchQuery:
    try:
        return parser.parse(rtype, items, strict=True, access=access)
    except SearchError as exc:
        raise FhirError(f"_typeFilter: {exc}", status=400, code=exc.code, expression=["_typeFilter"]) from exc
