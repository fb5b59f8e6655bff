"""Fuzzing with scoped tokens: clients that may do little, and an oracle for data they must not see.

The gateway holds one resource of each marker type carrying a marker string unique to the
run (an identifier value; the fixture Patient and Observation carry theirs too), linked so
that every way of reaching across types finds them: the Observation, Encounter, Condition
and Immunization refer to the fixture Patient, the Patient to a Practitioner, the
Observation to the Encounter. Each marker resource has several versions, for history.

``leak_hook`` fails any response (status line aside: headers and body) that holds the
marker of a type the client may not read (``r`` or ``s``), whatever the request was —
searches with ``_include``/``_revinclude``/``_has``/chains, history, ``$everything``,
Bundles, OperationOutcomes. Which types a client may read is the permission matrix's own
reading of scopes (``tests.support.permission_matrix.returnable``), not the gateway's.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import httpx

from tests.robustness.http import ResponseHook
from tests.robustness.seeds import FUZZ_TYPES, KNOWN_OBSERVATION_ID, KNOWN_PATIENT_ID, fixture_resources, seed
from tests.support.fhir_responses import ResponseViolation
from tests.support.permission_matrix import returnable

PROFILES: dict[str, tuple[str, ...]] = {
    "patient-rs": ("system/Patient.rs",),
    "observation-cruds": ("system/Observation.cruds",),
    "patient-c": ("system/Patient.c",),
    "patient-ud": ("system/Patient.ud",),  # may change patients it cannot read (PATCH answers)
}
MARKER_SYSTEM = "urn:fuzz:marker"
MARKER_TYPES = (*FUZZ_TYPES, "Practitioner")
PRACTITIONER_ID = "fuzz-practitioner"  # the fixture Patient's generalPractitioner
VERSIONS = 2


def new_markers() -> dict[str, str]:
    """A marker string per type, unique to this run."""
    run = uuid.uuid4().hex[:12]
    return {rtype: f"MARK{run}{rtype}" for rtype in MARKER_TYPES}


def marker_id(rtype: str) -> str:
    """The id of the marker resource of ``rtype``."""
    return {"Practitioner": PRACTITIONER_ID}.get(rtype, f"mark-{rtype.lower()}")


def marker_resources(markers: Mapping[str, str]) -> list[dict[str, Any]]:
    """The marked resources: the Practitioner, one of each fuzzed type, the fixture Patient and Observation."""

    def marked(resource: dict[str, Any]) -> dict[str, Any]:
        identifier = {"system": MARKER_SYSTEM, "value": markers[resource["resourceType"]]}
        return {**resource, "identifier": [*resource.get("identifier", []), identifier]}

    out = [marked({"resourceType": "Practitioner", "id": PRACTITIONER_ID, "name": [{"family": "Marker"}]})]
    for rtype in FUZZ_TYPES:
        resource = {**seed(rtype), "id": marker_id(rtype)}
        if rtype == "Observation":
            resource["encounter"] = {"reference": f"Encounter/{marker_id('Encounter')}"}
        out.append(marked(resource))
    return out + [marked(r) for r in fixture_resources()]


def seed_markers(admin: httpx.Client, markers: Mapping[str, str]) -> None:
    """Put the marked resources (back) in place, each with ``VERSIONS`` versions."""
    for resource in marker_resources(markers):
        url = f"/{resource['resourceType']}/{resource['id']}"
        for version in range(VERSIONS):
            response = admin.put(url, json={**resource, "language": ["en", "fr"][version % 2]})
            assert response.status_code in (200, 201), response.text


def unreadable(scopes: tuple[str, ...], markers: Mapping[str, str]) -> dict[str, str]:
    """The markers of the types ``scopes`` may not read, by type."""
    return {rtype: marker for rtype, marker in markers.items() if not returnable(scopes, rtype)}


def leaked(scopes: tuple[str, ...], markers: Mapping[str, str], text: str, seen: set[str] | None = None) -> str | None:
    """The first type whose marker ``text`` shows although ``scopes`` may not read it (None: none);
    ``seen`` collects the readable types whose markers show."""
    hidden = unreadable(scopes, markers)
    for rtype, marker in markers.items():
        if marker in text:
            if rtype in hidden:
                return rtype
            if seen is not None:
                seen.add(rtype)
    return None


def leak_hook(scopes: tuple[str, ...], markers: Mapping[str, str], seen: set[str] | None = None) -> ResponseHook:
    """A response hook failing on any marker of a type ``scopes`` may not read; ``seen`` collects
    the types whose markers did show up (a control that the markers are reachable at all)."""

    def hook(response: httpx.Response) -> None:
        response.read()
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        text = f"{headers}\n{response.content.decode('utf-8', 'replace')}"
        rtype = leaked(scopes, markers, text, seen)
        if rtype is not None:
            request = response.request
            raise ResponseViolation(
                f"{request.method} {request.url} -> {response.status_code} shows a {rtype} to a client "
                f"with {' '.join(scopes)}: {text[:300]}"
            )

    return hook


def reach_requests() -> list[tuple[str, str]]:
    """Requests (method, path under ``[base]``) that look across types from every marker type:
    reads, histories, ``$everything``, includes, revincludes, ``_has`` and chains."""
    patient = f"Patient/{KNOWN_PATIENT_ID}"
    out = [
        ("GET", f"/{patient}/$everything"), ("GET", "/_history"), ("GET", f"/{patient}/_history"),
        ("GET", f"/Observation/{KNOWN_OBSERVATION_ID}/_history/1"),
        ("GET", f"/Patient?_id={KNOWN_PATIENT_ID}&_include=Patient:general-practitioner"),
        ("GET", f"/Patient?_id={KNOWN_PATIENT_ID}&_include=Patient:general-practitioner:Practitioner"),
        ("GET", f"/Patient?_id={KNOWN_PATIENT_ID}&_revinclude=Observation:subject"),
        ("GET", "/Patient?_revinclude=Encounter:subject&_revinclude=Condition:subject"),
        ("GET", f"/Patient?_has:Observation:subject:identifier={MARKER_SYSTEM}|"),
        ("GET", "/Observation?_include=Observation:subject&_include=Observation:encounter"),
        ("GET", "/Observation?_include=Observation:subject:Patient&_include:iterate=Patient:general-practitioner"),
        ("GET", "/Observation?subject:Patient.identifier=urn:fuzz:known|k1"),
        ("GET", "/Observation?subject.name=Zo"),
        ("GET", "/Immunization?_include=Immunization:patient"), ("GET", "/Condition?_include=Condition:subject"),
        ("GET", "/Encounter?_revinclude=Observation:encounter"),
        ("GET", f"/Practitioner/{PRACTITIONER_ID}"), ("GET", "/Practitioner?_revinclude=Patient:general-practitioner"),
    ]  # fmt: skip
    for rtype in MARKER_TYPES:
        rid = marker_id(rtype)
        out += [("GET", f"/{rtype}/{rid}"), ("GET", f"/{rtype}/{rid}/_history"), ("GET", f"/{rtype}/_history"),
                ("GET", f"/{rtype}?identifier={MARKER_SYSTEM}|"), ("GET", f"/{rtype}/{rid}/_history/1")]  # fmt: skip
    return out
