"""R4's allowed reference target types, enforced on every write (issue 12, item 7), on both stores."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.settings import Settings
from tests.api.test_fhir_api import assert_outcome
from tests.conftest import ApiHarness

PERFORMERS = "CareTeam, Device, HealthcareService, Organization, Patient, Practitioner, PractitionerRole, RelatedPerson"


@pytest.fixture
def settings(store_url: str) -> Settings:
    """The app on each store backend."""
    return Settings(store_url=store_url, allowed_hosts=["gateway.test"])


def service_request(performer: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "performer": [{"reference": "Practitioner/dr"}, performer],
        **more,
    }


def task(owner: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order", "owner": owner, **more}


LOCATIONS = [
    "Location/clinic",
    "Location/clinic/_history/2",
    "https://emr.example.org/fhir/Location/clinic",
    "Location?identifier=urn:sys|clinic",
]


async def test_a_performer_that_is_a_location_is_refused_naming_the_element_and_the_allowed_types(
    api: ApiHarness,
) -> None:
    for reference in LOCATIONS:
        sent = service_request({"reference": reference})
        body = assert_outcome(await api.client.post("/fhir/ServiceRequest", json=sent), 422, "invalid")
        [issue] = body["issue"]
        assert issue["expression"] == ["ServiceRequest.performer[1]"]
        assert issue["diagnostics"] == (
            f"ServiceRequest.performer[1]: a reference to a Location is not allowed here; R4 allows {PERFORMERS}"
        )
        assert "clinic" not in issue["diagnostics"]  # types only, never ids or values
    assert not (await api.client.get("/fhir/ServiceRequest")).json().get("entry")
    ok = service_request({"reference": "Organization/o1"})
    assert (await api.client.post("/fhir/ServiceRequest", json=ok)).status_code == 201


async def test_a_task_owned_by_a_location_is_refused_on_create_and_update(api: ApiHarness) -> None:
    bad = task({"reference": "Location/clinic"})
    assert_outcome(await api.client.post("/fhir/Task", json=bad), 422, "invalid")
    body = assert_outcome(await api.client.put("/fhir/Task/t1", json={**bad, "id": "t1"}), 422, "invalid")
    assert body["issue"][0]["expression"] == ["Task.owner"]
    # Reference.type says the same without a literal reference.
    typed = task({"type": "Location", "identifier": {"system": "urn:sys", "value": "c"}})
    assert assert_outcome(await api.client.put("/fhir/Task/t1", json={**typed, "id": "t1"}), 422)["issue"][0][
        "expression"
    ] == ["Task.owner"]
    assert (await api.client.get("/fhir/Task/t1")).status_code == 404


OWNERS: list[dict[str, Any]] = [
    {"reference": "Practitioner/dr"},
    {"reference": "https://emr.example.org/fhir/Organization/o1/_history/3"},
    {"reference": "Organization?identifier=urn:sys|o1"},
    {"identifier": {"system": "urn:sys", "value": "anyone"}},  # logical: the type is unknown
    {"display": "the night nurse"},
    {"reference": "urn:uuid:7f3c0a4e-7f6b-4a50-8d5e-2f4c1e9a0b11"},  # outside a Bundle: unknown
    {"reference": "https://emr.example.org/people/42"},  # a URL that names no type
]


async def test_allowed_and_unknowable_targets_are_stored(api: ApiHarness) -> None:
    for owner in OWNERS:
        response = await api.client.put("/fhir/Task/t2", json={**task(owner), "id": "t2"})
        assert response.status_code in (200, 201), response.text
        assert response.json()["owner"] == owner


async def test_any_reference_elements_take_any_type(api: ApiHarness) -> None:
    # Task.for and Task.focus are Reference(Any) in R4.
    resource = task({"reference": "Organization/o1"}, **{"for": {"reference": "Location/clinic"}},
                    focus={"reference": "Location/clinic"})  # fmt: skip
    assert (await api.client.post("/fhir/Task", json=resource)).status_code == 201


async def test_contained_targets_are_judged_by_their_type(api: ApiHarness) -> None:
    # Each contained resource is referenced from its container (dom-3 asks that of them).
    good = task({"reference": "#dr"}, contained=[{"resourceType": "Practitioner", "id": "dr"}])
    assert (await api.client.post("/fhir/Task", json=good)).status_code == 201
    bad = task({"reference": "#room"}, contained=[{"resourceType": "Location", "id": "room"}])
    body = assert_outcome(await api.client.post("/fhir/Task", json=bad), 422, "invalid")
    assert body["issue"][0]["expression"] == ["Task.owner"]
    # A reference inside a contained resource resolves against the container, too.
    nested = task(
        {"reference": "#role"},
        contained=[
            {"resourceType": "Location", "id": "room"},
            {"resourceType": "PractitionerRole", "id": "role", "organization": {"reference": "#room"}},
        ],
    )
    body = assert_outcome(await api.client.post("/fhir/Task", json=nested), 422, "invalid")
    assert body["issue"][0]["expression"] == ["Task.contained[1].organization"]
    assert "R4 allows Organization" in body["issue"][0]["diagnostics"]


async def test_datatypes_inside_a_resource_are_checked(api: ApiHarness) -> None:
    # Annotation.author[x] and Identifier.assigner restrict their targets wherever they appear.
    resource = task(
        {"reference": "Practitioner/dr"},
        note=[{"text": "x", "authorReference": {"reference": "Location/c"}}],
        identifier=[{"value": "1", "assigner": {"reference": "Patient/p1"}}],
    )
    body = assert_outcome(await api.client.post("/fhir/Task", json=resource), 422, "invalid")
    expressions = sorted(i["expression"][0] for i in body["issue"])
    assert expressions == ["Task.identifier[0].assigner", "Task.note[0].authorReference"]


async def test_a_transaction_judges_urn_uuid_references_by_the_entry_they_name(api: ApiHarness) -> None:
    location = "urn:uuid:0b1e7f2a-0000-4000-8000-000000000001"
    practitioner = "urn:uuid:0b1e7f2a-0000-4000-8000-000000000002"

    def bundle(owner: str) -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"fullUrl": location, "resource": {"resourceType": "Location", "name": "clinic"},
                 "request": {"method": "POST", "url": "Location"}},
                {"fullUrl": practitioner, "resource": {"resourceType": "Practitioner"},
                 "request": {"method": "POST", "url": "Practitioner"}},
                {"resource": task({"reference": owner}), "request": {"method": "POST", "url": "Task"}},
            ],
        }  # fmt: skip

    body = assert_outcome(await api.client.post("/fhir", json=bundle(location)), 422, "invalid")
    assert body["issue"][0]["expression"] == ["Bundle.entry[2].resource.ofType(Task).owner"]
    assert not (await api.client.get("/fhir/Location")).json().get("entry")  # nothing was written
    response = await api.client.post("/fhir", json=bundle(practitioner))
    assert response.status_code == 200, response.text
    owner = response.json()["entry"][2]["resource"]["owner"]["reference"]
    assert owner.startswith("Practitioner/")
    # A relative reference in an entry is judged by its own type.
    body = assert_outcome(await api.client.post("/fhir", json=bundle("Location/x")), 422, "invalid")
    assert body["issue"][0]["expression"] == ["Bundle.entry[2].resource.ofType(Task).owner"]
