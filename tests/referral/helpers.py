"""What a facility EMR does in the referral tests: a client limited to one patient, and completing a Task."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import make_token
from tests.ingest.conftest import Harness

FULFILL = "http://hl7.org/fhir/CodeSystem/task-code|fulfill"


def facility_client(gw: Harness, patient: str) -> httpx.AsyncClient:
    """A facility EMR: may read and update Tasks and write Encounters, only for its own patient."""
    name = f"facility-{patient[:8]}"
    token = make_token(gw.store, ("system/Task.rus", "system/Encounter.crus"), name=name)
    assert gw.store.set_client_policy(name, {"patients": [f"Patient/{patient}"]})
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app), base_url="http://gateway.test",
                             headers={"Authorization": f"Bearer {token}"})  # fmt: skip


async def complete_task(facility: httpx.AsyncClient, task_id: str, patient: str) -> dict[str, Any]:
    """What a facility EMR does: record the visit, then complete the Task pointing at it."""
    listed = await facility.get("/fhir/Task", params={"code": FULFILL})
    assert listed.status_code == 200
    assert [e["resource"]["id"] for e in listed.json().get("entry", [])] == [task_id]
    visit = {"resourceType": "Encounter", "status": "finished", "subject": {"reference": f"Patient/{patient}"},
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
             "period": {"start": "2025-05-15T09:30:00Z"}}  # fmt: skip
    created = await facility.post("/fhir/Encounter", json=visit)
    assert created.status_code == 201, created.text
    task = (await facility.get(f"/fhir/Task/{task_id}")).json()
    task.update(status="completed", lastModified="2025-05-15T11:00:00Z",
                output=[{"type": {"text": "facility visit"},
                         "valueReference": {"reference": f"Encounter/{created.json()['id']}"}}])  # fmt: skip
    updated = await facility.put(f"/fhir/Task/{task_id}", json=task)
    assert updated.status_code == 200, updated.text
    result: dict[str, Any] = updated.json()
    return result
