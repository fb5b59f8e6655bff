"""End to end: changes committed through the FHIR API reach a rest-hook subscriber through the
delivery queue, matching changes only, in order, each event once in effect (the stand-in dedupes
by event number) through refused posts, lost answers, timeouts and a restart of the worker;
on both store backends and both queue backends."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tests.delivery.helpers import eventually
from tests.subscriptions.harness import LAB, VITALS, Harness, subscription


async def _put(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    response = await client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text


async def _create(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    response = await client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _subscribe(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/fhir/Subscription", json=resource)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    assert created["status"] == "active", created
    return created


def _patient(org: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": f"F{uuid.uuid4().hex[:6]}"}],
            "managingOrganization": {"reference": f"Organization/{org}"}}


def _observation(patient: str, category: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "category": [category], "code": {"text": "Hb"},
            "subject": {"reference": f"Patient/{patient}"}, "valueQuantity": {"value": 11.2, "unit": "g/dL"}}


async def _organizations(writer: httpx.AsyncClient) -> None:
    for org in ("north", "south"):
        await _put(writer, {"resourceType": "Organization", "id": org, "name": org})


async def test_new_patients_of_one_organisation_arrive_in_order_once_through_faults(harness: Harness) -> None:
    writer = harness.client("system/*.cruds")
    emr = harness.client("system/Subscription.cruds", "system/Patient.rs")
    await _organizations(writer)
    created = await _subscribe(emr, subscription("new-patient", harness.endpoint("emr"),
                                                 filters=["Patient?organization=Organization/north"]))
    assert harness.sandbox.receiver("emr").handshakes == 1
    await harness.start_worker()
    receiver = harness.sandbox.receiver("emr")
    expected: list[str] = []
    for round_ in range(4):
        if round_ == 1:
            harness.sandbox.fault("emr", fail=3, status=500)  # refused: retried
        if round_ == 2:
            harness.sandbox.fault("emr", lose=2)  # kept, but the answer is lost: sent again
        if round_ == 3:
            harness.sandbox.fault("emr", delay=1.0, delayed=1)  # kept, answered after the timeout
        for _ in range(3):
            expected.append("Patient/" + await _create(writer, _patient("north")))
            await _create(writer, _patient("south"))  # another organisation: never notified
        if round_ == 1:
            await harness.stop_worker()  # a restart with notifications still queued
            await harness.start_worker()
        # The round's fault is used up before the next one replaces it.
        await eventually(lambda: len(receiver.events) == len(expected), timeout=30)
    await eventually(lambda: receiver.duplicates >= 2, timeout=30)  # the lost answers' events, sent again
    await asyncio.sleep(0.3)  # nothing more arrives
    assert receiver.numbers() == list(range(1, len(expected) + 1))
    assert receiver.order_errors == []
    assert receiver.focus() == expected
    status = (await emr.get(f"/fhir/Subscription/{created['id']}/$status")).json()
    parameters = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert parameters["events-since-subscription-start"]["valueString"] == str(len(expected))
    assert parameters["status"]["valueCode"] == "active"


async def test_a_subscriber_without_scope_for_a_type_learns_nothing_about_it(harness: Harness) -> None:
    writer = harness.client("system/*.cruds")
    await _organizations(writer)
    # May subscribe and read Patients, not Observations.
    blind = harness.client("system/Subscription.cruds", "system/Patient.rs")
    seeing = harness.client("system/Subscription.cruds", "system/Observation.rs")
    await _subscribe(blind, subscription("lab-observation", harness.endpoint("blind"), content="full-resource"))
    await _subscribe(seeing, subscription("lab-observation", harness.endpoint("seeing"), content="full-resource"))
    await harness.start_worker()
    patient = await _create(writer, _patient("north"))
    lab = await _create(writer, _observation(patient, LAB))
    await _create(writer, _observation(patient, VITALS))  # not laboratory: not this topic
    seeing_receiver = harness.sandbox.receiver("seeing")
    await eventually(lambda: len(seeing_receiver.events) == 1, timeout=20)
    await asyncio.sleep(0.3)
    assert seeing_receiver.focus() == [f"Observation/{lab}"]
    entries = seeing_receiver.events[1]["entry"]
    assert entries[1]["resource"]["id"] == lab  # full-resource carries the resource
    blind_receiver = harness.sandbox.receiver("blind")
    assert blind_receiver.events == {} and blind_receiver.handshakes == 1
    assert all("Observation" not in str(bundle) for bundle in blind_receiver.events.values())


async def test_a_notification_is_checked_again_when_it_is_sent(harness: Harness) -> None:
    """A data policy set between matching and sending (a retry, a queue that waited) keeps the
    resource out: the owner's access is checked again at sending, not only at matching."""
    from gateway.auth import hash_token

    writer = harness.client("system/*.cruds")
    await _organizations(writer)
    emr = harness.client("system/Subscription.cruds", "system/Patient.rs")
    name = harness.store.client_by_token_hash(hash_token(emr.headers["Authorization"].split()[1])).name  # type: ignore[union-attr]
    await _subscribe(emr, subscription("new-patient", harness.endpoint("late"), content="full-resource"))
    harness.sandbox.fault("late", fail=1)  # the first attempt is refused: it is sent again later
    await harness.start_worker()
    north = await _create(writer, _patient("north"))
    receiver = harness.sandbox.receiver("late")
    await eventually(lambda: harness.sandbox.fault_left("late") == 0, timeout=20)
    harness.store.set_client_policy(name, {"organizations": ["Organization/south"]})
    south = await _create(writer, _patient("south"))
    await eventually(lambda: 2 in receiver.events, timeout=30)
    assert 1 not in receiver.events  # north's Patient, hidden from the owner by now
    assert receiver.focus() == [f"Patient/{south}"] and north not in str(receiver.events)
