"""What the OpenMRS profile makes of single resources (the store holds Locations, ServiceRequests and OpenMRS ids)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from gateway.clock import ManualClock
from gateway.connectors.base import Job
from gateway.connectors.openmrs import OpenMrsConnector
from gateway.delivery.factory import default_factories
from gateway.store import Store
from tests.openmrs.test_config import openmrs

CHT = "urn:chw-gateway:cht:demo"
NATIONAL = "http://openmrs.example.org/identifier/national-id"


def profile(store: Store) -> Any:
    connector = default_factories(store)["fhir"](openmrs(), client=httpx.AsyncClient(), clock=ManualClock())
    assert isinstance(connector, OpenMrsConnector)
    return connector.profile


def job(resource: dict[str, Any]) -> Job:
    rtype, rid = resource["resourceType"], resource["id"]
    return Job(id="emr:1", destination="emr", seq=1, resource_type=rtype, resource_id=rid, version=1, op="update",
               key=f"{rtype}/{rid}", payload=orjson.dumps(resource))  # fmt: skip


def seed(store: Store, *resources: dict[str, Any]) -> None:
    with store.transaction() as tx:
        for resource in resources:
            tx.update(resource)


def test_mapped_identifiers_only_one_preferred_with_the_household_areas_location(sqlite_store: Store) -> None:
    area_id = {"system": f"{CHT}:place_id", "value": "CHW-AREA-KISIWA"}
    seed(sqlite_store, {"resourceType": "Location", "id": "area", "identifier": [area_id]},
         {"resourceType": "Location", "id": "hh", "partOf": {"reference": "Location/area"}})  # fmt: skip
    patient = {
        "resourceType": "Patient", "id": "p1", "gender": "female",
        "identifier": [{"use": "secondary", "system": f"{CHT}:doc", "value": "doc-1"},
                       {"use": "official", "system": f"{CHT}:patient_id", "value": "P1"},
                       {"use": "official", "system": NATIONAL, "value": "N-9"}],
        "generalPractitioner": [{"reference": "Practitioner/chw"}],
        "extension": [{"url": "urn:chw-gateway:extension:household-location",
                       "valueReference": {"reference": "Location/hh"}}],
    }  # fmt: skip
    prepared = profile(sqlite_store).prepare(job(patient))
    sent = prepared.body
    assert [(i["value"], i["use"], i["type"]["text"]) for i in sent["identifier"]] == [
        ("P1", "official", "CHT Patient ID"), ("N-9", "usual", "National ID")]  # fmt: skip
    place = sent["identifier"][0]["extension"][0]["valueReference"]["reference"]
    assert place == "Location/ba685651-ed3b-4e63-9b35-78893060758a"
    assert "generalPractitioner" not in sent and "extension" not in sent and "id" not in sent
    assert prepared.remote_id is None and not prepared.pending


def test_an_encounter_waits_for_its_patient_then_points_at_openmrs_ids(sqlite_store: Store) -> None:
    encounter = {"resourceType": "Encounter", "id": "e1", "status": "finished", "subject": {"reference": "Patient/p1"},
                 "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "439708006"}]}],
                 "participant": [{"individual": {"reference": "Practitioner/chw"}}]}  # fmt: skip
    emr = profile(sqlite_store)
    assert emr.prepare(job(encounter)).refs == ("Patient/p1",)
    sqlite_store.set_destination_id("emr", "Patient/p1", "omrs-p1")
    sent = emr.prepare(job(encounter)).body
    assert sent["subject"] == {"reference": "Patient/omrs-p1"} and "participant" not in sent
    assert sent["type"][0]["coding"][0]["code"] == "d7151f82-c1f3-4152-a605-2f9ea7414a79"
    assert sent["location"] == [{"location": {"reference": "Location/8d6c993e-c2cc-11de-8d13-0010c6dffd0f"}}]


def test_a_referral_task_carries_its_service_request_in_a_note(sqlite_store: Store) -> None:
    seed(sqlite_store, {"resourceType": "ServiceRequest", "id": "sr", "status": "active", "intent": "order",
                        "subject": {"reference": "Patient/p1"}, "code": {"text": "Referral"}, "priority": "stat",
                        "reasonCode": [{"text": "Vomits everything"}], "performer": [{"display": "Kisiwa HC"}]})
    sqlite_store.set_destination_id("emr", "Patient/p1", "omrs-p1")
    task = {"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order",
            "focus": {"reference": "ServiceRequest/sr"}, "for": {"reference": "Patient/p1"}}  # fmt: skip
    sent = profile(sqlite_store).prepare(job(task)).body
    assert "focus" not in sent and sent["for"] == {"reference": "Patient/omrs-p1"}
    assert sent["note"] == [{"text": "Referral: Referral. reasons: Vomits everything. to: Kisiwa HC. priority: stat"}]
