"""``PATCH [type]/[id]`` with a FHIRPath Patch (a Parameters resource as ``application/fhir+json``),
beside JSON Patch: over REST and in Bundles, with If-Match, scopes and validation of the result."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ApiHarness
from tests.fhir.test_fhirpath_patch import operation

FHIR = {"Content-Type": "application/fhir+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def parameters(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(operations)}


async def _patient(client: httpx.AsyncClient, pid: str) -> None:
    body = {"resourceType": "Patient", "id": pid, "name": [{"family": "Mwangi", "given": ["Amina"]}],
            "telecom": [{"system": "phone", "value": "0700"}]}  # fmt: skip
    assert (await client.put(f"/fhir/Patient/{pid}", json=body)).status_code == 201


async def test_a_fhirpath_patch_updates_the_resource(api_on: ApiHarness) -> None:
    client = api_on.client
    await _patient(client, "fp1")
    patch = parameters(
        operation("add", "Patient", name="birthDate", value={"valueDate": "1990-04-02"}),
        operation("replace", "Patient.name.family", value={"valueString": "Wanjiru"}),
        operation("insert", "Patient.telecom", index=0, value={"valueContactPoint": {"system": "sms", "value": "1"}}),
    )
    answer = await client.patch("/fhir/Patient/fp1", json=patch, headers={**FHIR, "If-Match": 'W/"1"'})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["meta"]["versionId"] == "2" and answer.headers["ETag"] == 'W/"2"'
    assert body["birthDate"] == "1990-04-02" and body["name"][0]["family"] == "Wanjiru"
    assert [t["system"] for t in body["telecom"]] == ["sms", "phone"]
    stored = (await client.get("/fhir/Patient/fp1")).json()
    assert stored["name"][0]["family"] == "Wanjiru"
    found = (await client.get("/fhir/Patient", params={"family": "Wanjiru"})).json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == ["fp1"]  # indexed as any update
    stale = await client.patch("/fhir/Patient/fp1", json=patch, headers={**FHIR, "If-Match": 'W/"1"'})
    assert stale.status_code == 412, stale.text


async def test_the_body_and_content_type_must_agree(api_on: ApiHarness) -> None:
    client = api_on.client
    await _patient(client, "fp2")
    json_patch = [{"op": "replace", "path": "/name/0/family", "value": "Otieno"}]
    as_fhir = await client.patch("/fhir/Patient/fp2", json=json_patch, headers=FHIR)
    assert as_fhir.status_code == 400 and "FHIRPath Patch" in as_fhir.text
    as_json_patch = await client.patch("/fhir/Patient/fp2", json=parameters(), headers=JSON_PATCH)
    assert as_json_patch.status_code == 400 and "array of operations" in as_json_patch.text
    # Plain application/json: the body says which patch it is.
    plain = await client.patch("/fhir/Patient/fp2", json=json_patch, headers={"Content-Type": "application/json"})
    assert plain.status_code == 200 and plain.json()["name"][0]["family"] == "Otieno"
    plain = await client.patch("/fhir/Patient/fp2", headers={"Content-Type": "application/json"}, json=parameters(
        operation("replace", "Patient.name.family", value={"valueString": "Akinyi"})))
    assert plain.status_code == 200 and plain.json()["name"][0]["family"] == "Akinyi"
    xml = await client.patch("/fhir/Patient/fp2", content=b"<Parameters/>", headers={"Content-Type": "application/xml"})
    assert xml.status_code == 415


async def test_a_patch_that_does_not_fit_changes_nothing(api_on: ApiHarness) -> None:
    client = api_on.client
    await _patient(client, "fp3")
    cases = [
        (parameters(operation("replace", "Patient.gender", value={"valueCode": "female"})), 422),  # selects nothing
        (parameters(operation("add", "Patient", name="gender", value={"valueCode": "dog"})), None),  # invalid result
        (parameters(operation("replace", "Patient.id", value={"valueId": "other"})), 422),
        (parameters(operation("upsert", "Patient")), 400),
        (parameters(operation("delete", "Patient.name..family")), 400),
    ]
    for patch, status in cases:
        answer = await client.patch("/fhir/Patient/fp3", json=patch, headers=FHIR)
        assert answer.status_code in ((400, 422) if status is None else (status,)), (patch, answer.text)
        assert answer.json()["resourceType"] == "OperationOutcome"
    assert (await client.get("/fhir/Patient/fp3")).json()["meta"]["versionId"] == "1"
    missing = await client.patch("/fhir/Patient/nobody", json=parameters(operation("delete", "Patient.name")),
                                 headers=FHIR)  # fmt: skip
    assert missing.status_code == 404


async def test_a_client_that_may_not_read_may_not_send_one(api_on: ApiHarness) -> None:
    await _patient(api_on.client, "fp4")
    blind = api_on.with_scopes("system/Patient.u")
    patch = parameters(operation("delete", "Patient.telecom.where(value = '0700')"))
    answer = await blind.patch("/fhir/Patient/fp4", json=patch, headers=FHIR)
    assert answer.status_code == 403 and "whether it applies tells what is stored" in answer.text
    assert (await api_on.client.get("/fhir/Patient/fp4")).json()["meta"]["versionId"] == "1"
    reader = api_on.with_scopes("system/Patient.ru")
    assert (await reader.patch("/fhir/Patient/fp4", json=patch, headers=FHIR)).status_code == 200


async def test_fhirpath_patches_in_bundles(api_on: ApiHarness) -> None:
    client = api_on.client
    await _patient(client, "fp5")
    entry = {"request": {"method": "PATCH", "url": "Patient/fp5"},
             "resource": parameters(operation("add", "Patient", name="gender", value={"valueCode": "female"}))}
    transaction = await client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]})
    assert transaction.status_code == 200, transaction.text
    assert transaction.json()["entry"][0]["response"]["status"].startswith("200")
    assert (await client.get("/fhir/Patient/fp5")).json()["gender"] == "female"
    bad = {**entry, "resource": parameters(operation("add", "Patient", name="gender", value={"valueCode": "male"}))}
    batch = await client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [bad]})
    assert batch.status_code == 200
    response = batch.json()["entry"][0]["response"]
    assert response["status"].startswith("422") and "already has a value" in str(response["outcome"])
