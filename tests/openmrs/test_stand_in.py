"""The OpenMRS FHIR2 stand-in answers as the module's documentation says (shared/apis/openmrs.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from openmrs_sandbox import BASE, OpenMrs, create_app, reference_site

KISIWA = "ba685651-ed3b-4e63-9b35-78893060758a"
PATIENT = {
    "resourceType": "Patient",
    "id": "client-chosen",
    "name": [{"family": "Nakato", "given": ["Aisha"]}],
    "gender": "female",
    "identifier": [
        {"value": "P1", "type": {"text": "CHT Patient ID"},
         "extension": [{"url": "http://fhir.openmrs.org/ext/patient/identifier#location",
                        "valueReference": {"reference": f"Location/{KISIWA}"}}]},
        {"system": "urn:unknown", "value": "dropped"},
    ],
}  # fmt: skip


@pytest.fixture
async def emr() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(OpenMrs(reference_site(upsert=frozenset({"Task", "Patient"}))))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://emr" + BASE, auth=("admin", "Admin123")) as c:
        yield c


async def test_a_create_gets_a_server_id_and_keeps_only_identifiers_of_known_types(emr: httpx.AsyncClient) -> None:
    created = await emr.post("/Patient", json=PATIENT)
    assert created.status_code == 201
    body = created.json()
    assert body["id"] != "client-chosen" and created.headers["location"].endswith(f"/Patient/{body['id']}")
    assert [i["value"] for i in body["identifier"]] == ["P1"]
    assert body["identifier"][0]["type"]["coding"] == [{"code": "a5d38e09-efcb-4d91-a526-50ce1ba5011a"}]


async def test_put_checks_the_id_and_creates_only_upsert_types(emr: httpx.AsyncClient) -> None:
    created = (await emr.post("/Patient", json=PATIENT)).json()
    mismatch = await emr.put(f"/Patient/{created['id']}", json={**PATIENT, "id": "other"})
    assert mismatch.status_code == 400 and mismatch.json()["resourceType"] == "OperationOutcome"
    # Patient is no metadata type: listing it in the global property does not make it upsertable.
    unknown = await emr.put("/Patient/nope", json={**PATIENT, "id": "nope"})
    assert unknown.status_code == 404
    task = {"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order"}
    assert (await emr.put("/Task/t1", json=task)).status_code == 201
    assert (await emr.put("/Task/t1", json=task)).status_code == 200


async def test_refusals_and_read_only_types(emr: httpx.AsyncClient) -> None:
    no_location = {**PATIENT, "identifier": [{"value": "P2", "type": {"text": "CHT Patient ID"}}]}
    refused = await emr.post("/Patient", json=no_location)
    assert refused.status_code == 422 and refused.json()["issue"][0]["expression"] == ["Patient.identifier[0]"]
    referral = {"resourceType": "ServiceRequest", "status": "active", "intent": "order"}
    assert (await emr.post("/ServiceRequest", json=referral)).status_code == 405
    assert (await emr.post("", json={"resourceType": "Bundle", "type": "transaction"})).status_code == 405
    task = {"resourceType": "Task", "status": "requested", "intent": "plan"}
    assert (await emr.post("/Task", json=task)).status_code == 422


async def test_a_deleted_object_is_gone(emr: httpx.AsyncClient) -> None:
    created = (await emr.post("/Patient", json=PATIENT)).json()
    assert (await emr.delete(f"/Patient/{created['id']}")).status_code == 200
    assert (await emr.get(f"/Patient/{created['id']}")).status_code == 410
    assert (await emr.get("/Patient", params={"identifier": "P1"})).json()["total"] == 0
    assert (await emr.get("/Patient", params={"nickname": "x"})).status_code == 400


async def test_searches_the_connector_relies_on(emr: httpx.AsyncClient) -> None:
    patient = (await emr.post("/Patient", json=PATIENT)).json()
    encounter = {"resourceType": "Encounter", "subject": {"reference": f"Patient/{patient['id']}"},
                 "type": [{"coding": [{"system": "http://fhir.openmrs.org/code-system/encounter-type",
                                       "code": "d7151f82-c1f3-4152-a605-2f9ea7414a79"}]}],
                 "location": [{"location": {"reference": f"Location/{KISIWA}"}}],
                 "period": {"start": "2024-05-13T10:00:00Z"}}  # fmt: skip
    assert (await emr.post("/Encounter", json=encounter)).status_code == 201

    async def total(**params: str) -> int:
        found = await emr.get("/Encounter", params={"subject": f"Patient/{patient['id']}", **params})
        return int(found.json()["total"])

    assert await total(date="2024-05-13") == 1 and await total(date="2024-05-14") == 0
    assert await total(date="ge2024-05-13") == 1 and await total(date="le2024-05-12") == 0
    assert await total(type="d7151f82-c1f3-4152-a605-2f9ea7414a79") == 1 and await total(type="other") == 0
    assert (await emr.get("/Patient", params={"identifier": "P1"})).json()["total"] == 1
