"""``$validate`` (Resource-validate): a client asks whether a resource would be accepted.

The answer is an OperationOutcome, 200 whether or not the resource is valid, with the same
issues a create or update would give; nothing is stored. Scoped as the interaction it stands for.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import ApiHarness

GOLDEN = {"system": "urn:chw-gateway:identity", "code": "golden"}


def _params(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(parts)}


def _severities(body: dict[str, Any]) -> list[str]:
    assert body["resourceType"] == "OperationOutcome"
    return [i["severity"] for i in body["issue"]]


async def test_a_valid_resource_is_valid_and_nothing_is_stored(api_on: ApiHarness) -> None:
    client = api_on.client
    before = (await client.get("/fhir/Patient", params={"_summary": "count"})).json()["total"]
    patient = {"resourceType": "Patient", "name": [{"family": "Achieng"}], "birthDate": "1990-04-02"}
    for body in (patient, _params({"name": "resource", "resource": patient}),
                 _params({"name": "mode", "valueCode": "create"}, {"name": "resource", "resource": patient})):
        answer = await client.post("/fhir/Patient/$validate", json=body)
        assert answer.status_code == 200, answer.text
        assert _severities(answer.json()) == ["information"]
    assert (await client.get("/fhir/Patient", params={"_summary": "count"})).json()["total"] == before


async def test_an_invalid_resource_gets_the_issues_a_create_would(api_on: ApiHarness) -> None:
    client = api_on.client
    patient = {"resourceType": "Patient", "birthDate": "02/04/1990", "gender": "f"}
    created = await client.post("/fhir/Patient", json=patient)
    assert created.status_code in (400, 422)
    answer = await client.post("/fhir/Patient/$validate", json=patient)
    assert answer.status_code == 200
    assert answer.json()["issue"] == created.json()["issue"]
    assert {tuple(i["expression"]) for i in answer.json()["issue"]} == {("Patient.birthDate",), ("Patient.gender",)}
    wrong_type = await client.post("/fhir/Patient/$validate", json={"resourceType": "Observation"})
    assert wrong_type.status_code == 200 and _severities(wrong_type.json()) == ["error"]


async def test_a_profile_is_not_checked_and_the_outcome_says_so(api_on: ApiHarness) -> None:
    body = _params({"name": "resource", "resource": {"resourceType": "Patient"}},
                   {"name": "profile", "valueUri": "http://example.org/StructureDefinition/chw-patient"})
    answer = await api_on.client.post("/fhir/Patient/$validate", json=body)
    assert answer.status_code == 200
    assert _severities(answer.json()) == ["information", "warning"]
    assert "was not checked" in answer.json()["issue"][1]["diagnostics"]


async def test_update_and_delete_modes_are_checked_against_the_stored_resource(api_on: ApiHarness) -> None:
    client = api_on.client
    pid = (await client.post("/fhir/Patient", json={"resourceType": "Patient"})).json()["id"]
    update = _params({"name": "mode", "valueCode": "update"},
                     {"name": "resource", "resource": {"resourceType": "Patient", "id": pid, "gender": "male"}})
    answer = await client.post(f"/fhir/Patient/{pid}/$validate", json=update)
    assert answer.status_code == 200 and _severities(answer.json()) == ["information"]
    other_id = await client.post("/fhir/Patient/someone-else/$validate", json=update)
    assert other_id.status_code == 200 and other_id.json()["issue"][0]["expression"] == ["id"]
    delete = _params({"name": "mode", "valueCode": "delete"})
    assert _severities((await client.post(f"/fhir/Patient/{pid}/$validate", json=delete)).json()) == ["information"]
    gone = (await client.post("/fhir/Patient/nobody/$validate", json=delete)).json()
    assert _severities(gone) == ["information", "information"] and "not there" in gone["issue"][1]["diagnostics"]
    # Only an instance can be updated or deleted; the resource is needed for the other modes.
    refused = await client.post("/fhir/Patient/$validate", json=update)
    assert refused.status_code == 400 and refused.json()["issue"][0]["expression"] == ["mode"]
    missing = await client.post("/fhir/Patient/$validate", json=_params({"name": "mode", "valueCode": "create"}))
    assert missing.status_code == 400 and missing.json()["issue"][0]["expression"] == ["resource"]


async def test_a_golden_record_may_not_be_changed_nor_a_patient_tagged_golden(api_on: ApiHarness) -> None:
    client = api_on.client
    tagged = {"resourceType": "Patient", "meta": {"tag": [GOLDEN]}}
    answer = await client.post("/fhir/Patient/$validate", json=tagged)
    assert answer.status_code == 200 and answer.json()["issue"][0]["code"] == "forbidden"
    with api_on.store.transaction() as tx:  # the gateway's identity matching writes golden records
        tx.update({"resourceType": "Patient", "id": "golden-1", "meta": {"tag": [GOLDEN]}})
    delete = _params({"name": "mode", "valueCode": "delete"})
    answer = await client.post("/fhir/Patient/golden-1/$validate", json=delete)
    assert answer.status_code == 200 and answer.json()["issue"][0]["code"] == "forbidden"


async def test_validate_is_scoped_as_the_interaction_it_stands_for(api_on: ApiHarness) -> None:
    patient = {"resourceType": "Patient"}
    reader = api_on.with_scopes("system/Patient.rs")
    assert (await reader.post("/fhir/Patient/$validate", json=patient)).status_code == 403
    creator = api_on.with_scopes("system/Patient.c")
    assert (await creator.post("/fhir/Patient/$validate", json=patient)).status_code == 200
    # Whether a resource is there is part of an update's or a delete's answer: it needs r too.
    delete = _params({"name": "mode", "valueCode": "delete"})
    for scope, status in (("system/Patient.d", 403), ("system/Patient.rd", 200)):
        answer = await api_on.with_scopes(scope).post("/fhir/Patient/x/$validate", json=delete)
        assert answer.status_code == status, scope
    assert (await api_on.anonymous().post("/fhir/Patient/$validate", json=patient)).status_code == 401


async def test_bad_requests_name_what_is_wrong(api_on: ApiHarness) -> None:
    client = api_on.client
    unknown = await client.post("/fhir/Patient/$validate", json=_params({"name": "strictness", "valueCode": "x"}))
    assert unknown.status_code == 400 and unknown.json()["issue"][0]["expression"] == ["Parameters.parameter[0]"]
    assert (await client.post("/fhir/Patient/$validate", json=[1])).status_code == 400
    assert (await client.post("/fhir/Nonsense/$validate", json={"resourceType": "Nonsense"})).status_code == 404
    assert (await client.get("/fhir/Patient/$validate")).status_code == 405


async def test_the_capability_statement_advertises_validate_where_clients_write(api_on: ApiHarness) -> None:
    capability = (await api_on.client.get("/fhir/metadata")).json()
    operations = {r["type"]: {o["name"] for o in r.get("operation", [])} for r in capability["rest"][0]["resource"]}
    assert operations["Observation"] == {"validate"} and {"everything", "validate"} <= operations["Patient"]
    assert "validate" not in operations["AuditEvent"]  # the gateway's own trail: nobody writes it
