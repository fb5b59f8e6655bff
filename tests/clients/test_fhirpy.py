"""fhirpy 2.3.1 (beda.software) against the running gateway, through its public API only."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound, OperationOutcome

from tests.clients.conftest import LiveGateway


@pytest.fixture
def client(live_gateway: LiveGateway) -> SyncFHIRClient:
    return SyncFHIRClient(live_gateway.base, authorization=f"Bearer {live_gateway.token}")


def system() -> str:
    return f"urn:test:fhirpy:{uuid.uuid4().hex}"


def test_create_read_and_search_by_identifier(client: SyncFHIRClient) -> None:
    sys_ = system()
    patient = client.resource(
        "Patient",
        identifier=[{"system": sys_, "value": "A-1"}],
        name=[{"family": "Nakamura", "given": ["Aiko"]}],
        birthDate="1987-04-12",
        active=True,
    )
    patient.save()
    assert patient.id and patient["meta"]["versionId"] == "1"

    read = client.reference("Patient", patient.id).to_resource()
    assert read["name"][0]["family"] == "Nakamura"
    assert read["birthDate"] == "1987-04-12"

    found = client.resources("Patient").search(identifier=f"{sys_}|A-1").fetch()
    assert [p.id for p in found] == [patient.id]
    assert client.resources("Patient").search(identifier=f"{sys_}|A-2").fetch() == []
    assert client.resources("Patient").search(identifier=f"{sys_}|A-1").count() == 1


def test_paging_through_50_patients_seven_at_a_time(client: SyncFHIRClient) -> None:
    sys_ = system()
    created = set()
    for index in range(50):
        patient = client.resource("Patient", identifier=[{"system": sys_, "value": str(index)}])
        patient.save()
        created.add(patient.id)
    search = client.resources("Patient").search(identifier=f"{sys_}|").limit(7)
    first_page = search.fetch()
    assert len(first_page) == 7
    seen = [p.id for p in search]  # __iter__ follows every next link
    assert len(seen) == 50 and set(seen) == created
    assert len(search.fetch_all()) == 50


def test_transaction_with_urn_uuid_references(client: SyncFHIRClient) -> None:
    sys_ = system()
    patient_urn = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_urn,
                "resource": {"resourceType": "Patient", "identifier": [{"system": sys_, "value": "tx"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": patient_urn},
                    "valueQuantity": {"value": 72, "unit": "/min"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    response: Any = client.execute("", method="post", data=bundle)  # POST [base]/, as fhirpy does
    assert response["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in response["entry"]] == ["201", "201"]
    patient = client.resources("Patient").search(identifier=f"{sys_}|tx").get()
    observation_id = response["entry"][1]["response"]["location"].split("Observation/")[1].split("/")[0]
    observation = client.reference("Observation", observation_id).to_resource()
    assert observation["subject"]["reference"] == f"Patient/{patient.id}"
    assert client.resources("Observation").search(subject=f"Patient/{patient.id}").count() == 1


def test_conditional_create_twice_makes_one_resource(
    client: SyncFHIRClient, live_gateway: LiveGateway
) -> None:
    sys_ = system()
    search = client.resources("Patient").search(identifier=f"{sys_}|cc")
    first, created_first = search.get_or_create(
        client.resource("Patient", identifier=[{"system": sys_, "value": "cc"}])
    )
    second, created_second = search.get_or_create(
        client.resource("Patient", identifier=[{"system": sys_, "value": "cc"}])
    )
    assert (created_first, created_second) == (True, False)
    assert first.id == second.id
    # The standard form, If-None-Exist, sent through fhirpy's extra_headers.
    conditional = SyncFHIRClient(
        live_gateway.base,
        authorization=f"Bearer {live_gateway.token}",
        extra_headers={"If-None-Exist": f"identifier={sys_}|cc"},
    )
    third = conditional.resource("Patient", identifier=[{"system": sys_, "value": "cc"}])
    third.save()
    assert third.id == first.id
    assert client.resources("Patient").search(identifier=f"{sys_}|cc").count() == 1


def test_update_with_a_stale_if_match_is_refused(client: SyncFHIRClient, live_gateway: LiveGateway) -> None:
    patient = client.resource("Patient", identifier=[{"system": system(), "value": "v"}], active=True)
    patient.save()
    patient["active"] = False
    patient.save()  # version 2
    assert patient["meta"]["versionId"] == "2"
    stale = SyncFHIRClient(
        live_gateway.base,
        authorization=f"Bearer {live_gateway.token}",
        extra_headers={"If-Match": 'W/"1"'},
    )
    copy = stale.resource("Patient", id=patient.id, identifier=patient["identifier"], active=True)
    with pytest.raises(MultipleResourcesFound):  # fhirpy's name for HTTP 412
        copy.save()
    assert client.reference("Patient", patient.id).to_resource()["active"] is False
    current = SyncFHIRClient(
        live_gateway.base,
        authorization=f"Bearer {live_gateway.token}",
        extra_headers={"If-Match": 'W/"2"'},
    )
    fresh = current.resource("Patient", id=patient.id, identifier=patient["identifier"], active=True)
    fresh.save()
    assert fresh["meta"]["versionId"] == "3"


def test_invalid_resource_raises_operation_outcome(client: SyncFHIRClient) -> None:
    with pytest.raises(OperationOutcome):
        client.resource("Patient", gender="dog").save()
