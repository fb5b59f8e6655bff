"""What notifications say: id-only and full-resource payloads, the referral topic, the owner's data
policy, error after repeated failures and recovery, heartbeats."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.delivery import DeadLetter, DeadLetterFilter
from tests.delivery.helpers import eventually
from tests.subscriptions.harness import LAB, REFERRAL, TOPIC, Harness, subscription
from tests.subscriptions.test_delivery import _create, _observation, _organizations, _patient, _put, _subscribe


def _status(bundle: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}


async def test_id_only_names_the_resource_without_its_content(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    writer = h.client("system/*.cruds")
    emr = h.client("system/Subscription.cruds", "system/Observation.rs", "system/Patient.rs")
    created = await _subscribe(emr, subscription("lab-observation", h.endpoint("emr")))
    await h.start_worker()
    await _organizations(writer)
    patient = await _create(writer, _patient("north"))
    lab = await _create(writer, _observation(patient, LAB))
    receiver = h.sandbox.receiver("emr")
    await eventually(lambda: len(receiver.events) == 1, timeout=20)
    bundle = receiver.events[1]
    assert bundle["type"] == "history" and bundle["entry"][0]["resource"]["resourceType"] == "Parameters"
    status = _status(bundle)
    assert status["type"]["valueCode"] == "event-notification"
    assert status["topic"]["valueCanonical"] == TOPIC + "lab-observation"
    assert status["subscription"]["valueReference"]["reference"].endswith(f"/Subscription/{created['id']}")
    parts = {p["name"]: p for p in status["notification-event"]["part"]}
    assert parts["event-number"]["valueString"] == "1"
    assert parts["focus"]["valueReference"]["reference"] == f"Observation/{lab}"
    entry = bundle["entry"][1]
    assert entry["fullUrl"].endswith(f"/Observation/{lab}") and entry["request"]["method"] == "POST"
    assert "resource" not in entry


async def test_referrals_new_and_changed_with_their_tasks(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    writer = h.client("system/*.cruds")
    emr = h.client("system/Subscription.cruds", "system/ServiceRequest.rs", "system/Task.rs")
    await _subscribe(emr, subscription("referral", h.endpoint("emr")))
    await h.start_worker()
    await _organizations(writer)
    patient = await _create(writer, _patient("north"))
    referral = {"resourceType": "ServiceRequest", "id": "ref-1", "status": "active", "intent": "order",
                "code": REFERRAL, "subject": {"reference": f"Patient/{patient}"}}
    await _put(writer, referral)
    await _put(writer, {"resourceType": "ServiceRequest", "id": "lab-order", "status": "active", "intent": "order",
                        "code": {"text": "full blood count"}, "subject": {"reference": f"Patient/{patient}"}})
    await _put(writer, {"resourceType": "Task", "id": "task-1", "status": "requested", "intent": "order",
                        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
                        "focus": {"reference": "ServiceRequest/ref-1"}, "for": {"reference": f"Patient/{patient}"}})
    await _put(writer, {"resourceType": "Task", "id": "task-lab", "status": "requested", "intent": "order",
                        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
                        "focus": {"reference": "ServiceRequest/lab-order"}, "for": {"reference": f"Patient/{patient}"}})
    await _put(writer, {**referral, "status": "completed"})
    receiver = h.sandbox.receiver("emr")
    await eventually(lambda: len(receiver.events) == 3, timeout=20)
    await asyncio.sleep(0.3)
    assert receiver.focus() == ["ServiceRequest/ref-1", "Task/task-1", "ServiceRequest/ref-1"]
    assert [receiver.events[n]["entry"][1]["request"]["method"] for n in (1, 2, 3)] == ["POST", "POST", "PUT"]


async def test_the_owners_data_policy_limits_what_it_hears_of(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    writer = h.client("system/*.cruds")
    await _organizations(writer)
    district = h.client("system/Subscription.cruds", "system/Patient.rs",
                        policy={"organizations": ["Organization/north"]})
    await _subscribe(district, subscription("new-patient", h.endpoint("north-only")))
    await h.start_worker()
    north = [await _create(writer, _patient("north")) for _ in range(2)]
    for _ in range(2):
        await _create(writer, _patient("south"))
    receiver = h.sandbox.receiver("north-only")
    await eventually(lambda: len(receiver.events) == 2, timeout=20)
    await asyncio.sleep(0.3)
    assert receiver.focus() == [f"Patient/{p}" for p in north]


async def test_repeated_failures_move_it_to_error_and_a_success_recovers_it(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    writer = h.client("system/*.cruds")
    emr = h.client("system/Subscription.cruds", "system/Patient.rs")
    created = await _subscribe(emr, subscription("new-patient", h.endpoint("emr")))
    await _organizations(writer)
    h.sandbox.fault("emr", fail=1000, status=500)
    await h.start_worker()
    await _create(writer, _patient("north"))

    async def status() -> str:
        answer: httpx.Response = await emr.get(f"/fhir/Subscription/{created['id']}")
        return str(answer.json()["status"])

    async def in_error() -> bool:
        return await status() == "error"

    await eventually(in_error, timeout=20)
    h.sandbox.fault("emr", fail=0)
    receiver = h.sandbox.receiver("emr")
    await eventually(lambda: len(receiver.events) == 1, timeout=20)

    async def active() -> bool:
        return await status() == "active"

    await eventually(active, timeout=10)


async def test_heartbeats_follow_the_heartbeat_period(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    emr = h.client("system/Subscription.cruds", "system/Patient.rs")
    await _subscribe(emr, subscription("new-patient", h.endpoint("emr"), heartbeat=1))
    await _subscribe(emr, subscription("new-patient", h.endpoint("quiet")))  # no heartbeat-period
    await h.start_worker()
    receiver = h.sandbox.receiver("emr")
    await eventually(lambda: len(receiver.heartbeats) >= 2, timeout=10)
    beat = {p["name"]: p for p in receiver.heartbeats[0]["parameter"]}
    assert beat["type"]["valueCode"] == "heartbeat" and beat["status"]["valueCode"] == "active"
    assert beat["events-since-subscription-start"]["valueString"] == "0"
    assert h.sandbox.receiver("quiet").heartbeats == []


async def test_a_subscription_below_the_shortest_heartbeat_period_is_refused(sqlite_harness: Harness) -> None:
    emr = sqlite_harness.client("system/Subscription.cruds", "system/Patient.rs")
    response = await emr.post("/fhir/Subscription", json=subscription(
        "new-patient", sqlite_harness.endpoint("emr"), heartbeat=0))
    assert response.status_code == 400


async def test_a_refused_notification_is_a_dead_letter_the_queue_command_lists_and_replays(
    sqlite_harness: Harness, monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = sqlite_harness
    writer = h.client("system/*.cruds")
    emr = h.client("system/Subscription.cruds", "system/Patient.rs")
    await _subscribe(emr, subscription("new-patient", h.endpoint("emr")))
    await _organizations(writer)
    h.sandbox.fault("emr", fail=1, status=422)  # a permanent refusal: no retry, a dead letter
    await h.start_worker()
    patient = await _create(writer, _patient("north"))
    monkeypatch.setenv("GATEWAY_STORE_URL", h.settings.store_url)
    monkeypatch.setenv("GATEWAY_QUEUE_URL", h.settings.queue_url)
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)

    async def listed() -> bool:
        result = await asyncio.to_thread(CliRunner().invoke, app,
                                         ["queue", "dead-letters", "--destination", "subscriptions", "--json"])
        return result.exit_code == 0 and f"Patient/{patient}" in result.output

    await eventually(listed, timeout=20)
    result = await asyncio.to_thread(CliRunner().invoke, app,
                                     ["queue", "replay", "--destination", "subscriptions"])
    assert result.exit_code == 0, result.output
    receiver = h.sandbox.receiver("emr")
    await eventually(lambda: receiver.focus() == [f"Patient/{patient}"], timeout=20)


async def test_a_dead_letter_never_keeps_the_subscribers_own_headers(sqlite_harness: Harness) -> None:
    """``channel.header`` carries the partner's credentials under any name it likes (``X-Partner-Token``,
    ``Authorization``...): operators never see them (``gateway subscriptions list`` does not show them),
    so the request a dead letter keeps does not either."""
    h = sqlite_harness
    writer = h.client("system/*.cruds")
    emr = h.client("system/Subscription.cruds", "system/Patient.rs")
    headers = ["X-Partner-Token: s3cret-partner-value", "Authorization: Bearer emr-own-t0ken"]
    await _subscribe(emr, subscription("new-patient", h.endpoint("emr"), headers=headers))
    await _organizations(writer)
    h.sandbox.fault("emr", fail=1, status=422)  # a permanent refusal: a dead letter
    await h.start_worker()
    patient = await _create(writer, _patient("north"))
    assert h.worker is not None
    admin = h.worker.require_delivery().admin
    letters: list[DeadLetter] = []

    async def listed() -> bool:
        letters[:] = await admin.dead_letters(DeadLetterFilter(destination="subscriptions"))
        return any(letter.job.ref == f"Patient/{patient}" for letter in letters)

    await eventually(listed, timeout=20)
    kept = repr([(letter.request, letter.response, letter.detail) for letter in letters])
    assert "x-partner-token" in kept.lower()  # the header is named, its value is not kept
    assert "s3cret-partner-value" not in kept and "emr-own-t0ken" not in kept


async def test_a_full_resource_notification_keeps_the_decimals_as_written(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    writer = h.client("system/*.cruds")
    emr = h.client("system/Subscription.cruds", "system/Observation.rs", "system/Patient.rs")
    await _subscribe(emr, subscription("lab-observation", h.endpoint("emr"), content="full-resource"))
    await h.start_worker()
    await _organizations(writer)
    patient = await _create(writer, _patient("north"))
    body = orjson.dumps(_observation(patient, LAB)).replace(b'"value":11.2', b'"value":11.20')
    created = await writer.post("/fhir/Observation", content=body, headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201 and b'"value":11.20' in created.content
    receiver = h.sandbox.receiver("emr")
    await eventually(lambda: len(receiver.events) == 1, timeout=20)
    assert any(b'"value":11.20' in raw for raw in receiver.bodies)
