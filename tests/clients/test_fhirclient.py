"""SMART's Python fhirclient 4.4.0 against the running gateway.

Its models are generated from FHIR 4.0.1 and strict (``strict=True``): they raise on
unknown elements, wrong JSON types and malformed dates, so every response it parses is
also an output check. It has no API for If-None-Exist or If-Match; fhirpy covers those.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fhirclient import client as smart_client
from fhirclient.models.bundle import Bundle
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.humanname import HumanName
from fhirclient.models.identifier import Identifier
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRServer

from tests.clients.conftest import LiveGateway


@pytest.fixture
def server(live_gateway: LiveGateway) -> Iterator[FHIRServer]:
    smart = smart_client.FHIRClient(settings={"app_id": "conformance-tests", "api_base": live_gateway.base})
    smart.server.session.headers["Authorization"] = f"Bearer {live_gateway.token}"
    smart.prepare()  # GET metadata, parsed with the strict CapabilityStatement model
    yield smart.server
    smart.server.session.close()


def new_patient(system: str, value: str, family: str = "Okafor") -> Patient:
    patient = Patient()
    identifier = Identifier()
    identifier.system, identifier.value = system, value
    name = HumanName()
    name.family, name.given = family, ["Chidi"]
    patient.identifier, patient.name, patient.birthDate = [identifier], [name], None
    return patient


def test_capability_statement_parses_with_the_strict_model(server: FHIRServer) -> None:
    capability = server.capabilityStatement
    assert isinstance(capability, CapabilityStatement)
    assert capability.fhirVersion == "4.0.1" and capability.kind == "instance"
    assert capability.rest[0].mode == "server"


def test_create_read_and_search_by_identifier(server: FHIRServer) -> None:
    system = f"urn:test:fhirclient:{uuid.uuid4().hex}"
    created = new_patient(system, "B-7").create(server)
    assert created is not None and created["id"]
    patient = Patient.read(created["id"], server)
    assert patient.name[0].family == "Okafor"
    assert patient.meta.versionId == "1"
    found = list(Patient.where(struct={"identifier": f"{system}|B-7"}).perform_resources_iter(server))
    assert [p.id for p in found] == [created["id"]]


def test_paging_through_50_patients_seven_at_a_time(server: FHIRServer) -> None:
    system = f"urn:test:fhirclient:{uuid.uuid4().hex}"
    ids = {new_patient(system, str(i)).create(server)["id"] for i in range(50)}
    search = Patient.where(struct={"identifier": f"{system}|", "_count": "7"})
    pages = list(search.perform_iter(server))  # follows absolute next links
    assert len(pages) == 8 and all(len(page.entry or []) <= 7 for page in pages)
    seen = [entry.resource.id for page in pages for entry in page.entry or []]
    assert len(seen) == 50 and set(seen) == ids


def test_transaction_with_urn_uuid_references(server: FHIRServer) -> None:
    system = f"urn:test:fhirclient:{uuid.uuid4().hex}"
    urn = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": urn,
                "resource": new_patient(system, "tx").as_json(),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "heart rate"},
                    "subject": {"reference": urn},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    response = Bundle(server.post_json("", bundle).json())  # POST [base]/, as fhirclient does
    assert response.type == "transaction-response"
    patient_id = response.entry[0].response.location.split("Patient/")[1].split("/")[0]
    observation_id = response.entry[1].response.location.split("Observation/")[1].split("/")[0]
    observation = Observation.read(observation_id, server)
    assert observation.subject.reference == f"Patient/{patient_id}"


def test_update_and_delete(server: FHIRServer) -> None:
    system = f"urn:test:fhirclient:{uuid.uuid4().hex}"
    patient = Patient.read(new_patient(system, "u").create(server)["id"], server)
    patient.active = True
    patient.update(server)
    again = Patient.read(patient.id, server)
    assert again.active is True and again.meta.versionId == "2"
    again.delete(server)
    with pytest.raises(Exception, match="410|Gone"):
        Patient.read(patient.id, server)
