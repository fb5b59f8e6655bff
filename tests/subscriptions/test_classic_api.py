"""Classic R4 criteria-based Subscriptions at the API: accepted without a handshake, status managed
by the server (requested → active, off after ``end``), checks that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.subscriptions.harness import BACKPORT, Harness, r4_subscription

CRITERIA = "Observation?code=http://loinc.org|1975-2"


async def test_accepted_active_without_a_handshake_and_readable_as_sent(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    owner = h.client("system/Subscription.cruds", "system/Observation.rs")
    sent = r4_subscription(CRITERIA, h.endpoint("emr"), headers=["Authorization: Bearer x"])
    response = await owner.post("/fhir/Subscription", json=sent)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "active"
    assert {k: v for k, v in created.items() if k not in ("id", "meta", "status")} == \
        {k: v for k, v in sent.items() if k != "status"}
    assert h.sandbox.receiver("emr").headers == []  # no handshake (R4 core has none)
    status = (await owner.get(f"/fhir/Subscription/{created['id']}/$status")).json()
    parameters = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert parameters["status"]["valueCode"] == "active" and "topic" not in parameters  # a criteria is no topic
    listed = (await owner.get("/fhir/Subscription", params={"criteria": CRITERIA})).json()
    assert [e["resource"]["id"] for e in listed["entry"]] == [created["id"]]
    off = await owner.put(f"/fhir/Subscription/{created['id']}", json={**sent, "status": "off"})
    assert off.status_code == 200 and off.json()["status"] == "off"
    again = await owner.put(f"/fhir/Subscription/{created['id']}", json=sent)
    assert again.json()["status"] == "active" and h.sandbox.receiver("emr").headers == []


async def test_the_server_sets_the_status(sqlite_harness: Harness) -> None:
    owner = sqlite_harness.client("system/Subscription.cruds", "system/Observation.rs")
    endpoint = sqlite_harness.endpoint("emr")
    claimed = {**r4_subscription(CRITERIA, endpoint, status="error"), "error": "the client's own words"}
    created = (await owner.post("/fhir/Subscription", json=claimed)).json()
    assert created["status"] == "active" and "error" not in created
    ended = {**r4_subscription(CRITERIA, endpoint), "end": "2021-01-01T00:00:00Z"}
    response = await owner.post("/fhir/Subscription", json=ended)
    assert response.status_code == 201 and response.json()["status"] == "off"  # its end has passed
    running = {**r4_subscription(CRITERIA, endpoint), "end": "2999-01-01T00:00:00Z"}
    assert (await owner.post("/fhir/Subscription", json=running)).json()["status"] == "active"
    # FHIR's instant allows a leap second (2016-12-31T23:59:60Z was one): an end, not a refusal.
    leap = {**r4_subscription(CRITERIA, endpoint), "end": "2016-12-31T23:59:60Z"}
    response = await owner.post("/fhir/Subscription", json=leap)
    assert response.status_code == 201 and response.json()["status"] == "off", response.text


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"criteria": "Observaton?code=x"}, "Subscription.criteria", "not an R4 resource type"),
    ({"criteria": "Observation?bogus-param=1"}, "Subscription.criteria", "bogus-param"),
    ({"criteria": "Observation?date=not-a-date"}, "Subscription.criteria", "date"),
    ({"criteria": "Observation?code=x&_include=Observation:subject"}, "Subscription.criteria", "_include"),
    ({"criteria": "Subscription?status=active"}, "Subscription.criteria", "cannot be subscribed to"),
    ({"meta": {"profile": [BACKPORT + "backport-subscription"]}}, "Subscription.criteria", "topic canonical"),
    ({"channel": {"type": "websocket"}}, "Subscription.channel.type", "websocket"),
    ({"channel": {"type": "message", "endpoint": "http://x.test/h"}}, "Subscription.channel.type", "rest-hook"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://x.test/h", "payload": "application/fhir+xml"}},
     "Subscription.channel.payload", "JSON only"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://x.test/h", "payload": "text/plain"}},
     "Subscription.channel.payload", "application/fhir+json"),
    ({"status": "paused"}, "Subscription.status", "requested"),
    ({"end": "next week"}, "Subscription.end", "instant"),
])
async def test_an_unusable_criteria_subscription_is_refused_naming_the_field(
    sqlite_harness: Harness, change: dict[str, Any], field: str, words: str,
) -> None:
    client = sqlite_harness.client("system/Subscription.cruds", "system/Observation.rs")
    response = await client.post("/fhir/Subscription", json={**r4_subscription(CRITERIA, "http://x.test/h"), **change})
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == [field] and words in issue["diagnostics"], issue


async def test_a_chain_into_a_type_the_owner_may_not_search_is_forbidden(sqlite_harness: Harness) -> None:
    client = sqlite_harness.client("system/Subscription.cruds", "system/Observation.rs")
    body = r4_subscription("Observation?subject:Patient.family=Smith", "http://x.test/h")
    response = await client.post("/fhir/Subscription", json=body)
    assert response.status_code == 403, response.text
    assert response.json()["issue"][0]["expression"] == ["Subscription.criteria"]
    allowed = sqlite_harness.client("system/Subscription.cruds", "system/Observation.rs", "system/Patient.s")
    assert (await allowed.post("/fhir/Subscription", json=body)).status_code == 201


async def test_the_capability_statement_says_classic_criteria_are_served(sqlite_harness: Harness) -> None:
    client = sqlite_harness.client("system/Patient.rs")
    rest = (await client.get("/fhir/metadata")).json()["rest"][0]
    described = [r for r in rest["resource"] if r["type"] == "Subscription"][0]
    assert "criteria" in described["documentation"] and "rest-hook" in described["documentation"]
