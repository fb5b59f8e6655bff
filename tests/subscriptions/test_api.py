"""The Subscription endpoints: create with handshake, ownership, scopes, ``$status``, checks that
name the field, the topics in the CapabilityStatement and as ``Basic`` resources."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.store import open_store
from gateway.subscriptions.config import SubscriptionSettings
from tests.subscriptions.harness import BACKPORT, TOPIC, Harness, fast_settings, subscription

FILTER = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria"
TOPIC_EXTENSION = ("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                   "capabilitystatement-subscriptiontopic-canonical")


async def test_create_handshakes_and_only_the_owner_sees_it(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    owner = h.client("system/Subscription.cruds", "system/Patient.rs")
    other = h.client("system/Subscription.cruds", "system/Patient.rs")
    response = await owner.post("/fhir/Subscription", json=subscription(
        "new-patient", h.endpoint("emr"), headers=["X-Partner-Key: k1"]))
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "active" and created["criteria"] == TOPIC + "new-patient"
    assert response.headers["location"].endswith(f"/Subscription/{created['id']}")
    receiver = h.sandbox.receiver("emr")
    assert receiver.handshakes == 1
    assert receiver.headers[0]["x-partner-key"] == "k1"  # channel.header is sent on every post
    read = (await owner.get(f"/fhir/Subscription/{created['id']}")).json()
    assert read["id"] == created["id"]
    # The profile the client declared is read back (a backport client checks it), beside lastUpdated.
    assert read["meta"]["profile"] == created["meta"]["profile"] == [BACKPORT + "backport-subscription"]
    assert read["meta"]["lastUpdated"]
    assert (await other.get(f"/fhir/Subscription/{created['id']}")).status_code == 404
    assert (await other.delete(f"/fhir/Subscription/{created['id']}")).status_code == 404
    listed = (await other.get("/fhir/Subscription")).json()
    assert listed["total"] == 0
    assert (await owner.get("/fhir/Subscription")).json()["total"] == 1
    assert (await owner.delete(f"/fhir/Subscription/{created['id']}")).status_code == 204
    assert (await owner.get(f"/fhir/Subscription/{created['id']}")).status_code == 404


async def test_a_failed_handshake_leaves_the_subscription_in_error_and_an_update_reactivates_it(
    sqlite_harness: Harness,
) -> None:
    h = sqlite_harness
    owner = h.client("system/Subscription.cruds", "system/Patient.rs")
    h.sandbox.fault("emr", fail=1, status=503)
    resource = subscription("new-patient", h.endpoint("emr"))
    created = (await owner.post("/fhir/Subscription", json=resource)).json()
    assert created["status"] == "error" and "handshake failed: http_503" in created["error"]
    status = (await owner.get("/fhir/Subscription/$status", params={"id": created["id"]})).json()
    assert status["type"] == "searchset"
    parameters = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert parameters["status"]["valueCode"] == "error"
    assert parameters["type"]["valueCode"] == "query-status"
    again = await owner.put(f"/fhir/Subscription/{created['id']}", json={**resource, "id": created["id"]})
    assert again.status_code == 200 and again.json()["status"] == "active"
    off = await owner.put(f"/fhir/Subscription/{created['id']}", json={**resource, "status": "off"})
    assert off.json()["status"] == "off"


async def test_subscribing_needs_the_subscription_scope(sqlite_harness: Harness) -> None:
    reader = sqlite_harness.client("system/Patient.rs")
    response = await reader.post("/fhir/Subscription", json=subscription("new-patient", "http://x.test/hook"))
    assert response.status_code == 403
    assert "Subscription" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(("change", "field"), [
    ({"criteria": "Patient?name=x"}, "Subscription.criteria"),
    ({"channel": {"type": "email", "endpoint": "mailto:a@b.test", "payload": "application/fhir+json"}},
     "Subscription.channel.type"),
    ({"channel": {"type": "rest-hook", "endpoint": "not a url", "payload": "application/fhir+json"}},
     "Subscription.channel.endpoint"),
    # urlsplit raises on these (was a 500)
    ({"channel": {"type": "rest-hook", "endpoint": "http://[::1/hook", "payload": "application/fhir+json"}},
     "Subscription.channel.endpoint"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://emr.test:port/hook", "payload": "application/fhir+json"}},
     "Subscription.channel.endpoint"),
    ({"_criteria": {"extension": [{"url": FILTER, "valueString": "Patient?name=x"}]}},
     "Subscription.criteria.extension('backport-filter-criteria')[0]"),
    ({"_criteria": {"extension": [{"url": FILTER,
                                   "valueString": "Patient?organization=Organization/a&organization:bogus=1"}]}},
     "Subscription.criteria.extension('backport-filter-criteria')[0]"),
])
async def test_an_unusable_subscription_is_refused_naming_the_field(
    sqlite_harness: Harness, change: dict[str, object], field: str,
) -> None:
    client = sqlite_harness.client("system/Subscription.cruds", "system/Patient.rs")
    body = {**subscription("new-patient", "http://x.test/h"), **change}
    response = await client.post("/fhir/Subscription", json=body)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == [field], issue


@pytest.mark.parametrize(("scopes", "policy", "refused"), [
    # a chain looks into Patient, which the owner may not search
    (("system/ServiceRequest.rs", "system/Task.rs"), None, "ServiceRequest?subject:Patient.name=Uwase"),
    (("system/ServiceRequest.rs", "system/Task.rs"), None, "patient:Patient.birthdate=1990-05-17"),
    # de-identification strips the city, so matching on it is refused as in a search
    (("system/Patient.rs",), {"deidentify": True}, "Patient?address-city=Town"),
    (("system/*.rs",), {"deidentify": True}, "ServiceRequest?subject:Patient.name=Uwase"),
])
async def test_a_topic_filter_matches_only_what_the_owner_may_search(
    sqlite_harness: Harness, scopes: tuple[str, ...], policy: dict[str, object] | None, refused: str,
) -> None:
    # Each notification tells the owner its filter matched: a filter is a search like any other.
    client = sqlite_harness.client("system/Subscription.cruds", *scopes, policy=policy)
    topic = "new-patient" if refused.startswith("Patient") else "referral"
    response = await client.post("/fhir/Subscription", json=subscription(topic, "http://x.test/h", filters=[refused]))
    assert response.status_code == 403, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Subscription.criteria.extension('backport-filter-criteria')[0]"], issue
    allowed = "ServiceRequest?subject=Patient/p1" if topic == "referral" else "Patient?address-district=Gasabo"
    response = await client.post("/fhir/Subscription", json=subscription(topic, "http://x.test/h", filters=[allowed]))
    assert response.status_code == 201, response.text


async def test_endpoint_hosts_keep_notifications_off_other_hosts(tmp_path: Path) -> None:
    """With ``subscriptions.endpoint_hosts`` a client cannot point the handshake (and notifications) at
    an internal service: a host not listed is refused, naming the endpoint, before any request."""
    url = f"sqlite:///{tmp_path}/store.db"
    store = open_store(url)
    settings = fast_settings(url, f"sqlite:///{tmp_path}/queue.db", endpoint_hosts=["127.0.0.1", "*.partner.test"])
    try:
        async with Harness(settings, store) as h:
            owner = h.client("system/Subscription.cruds", "system/Patient.rs")
            for endpoint in ("http://localhost:5432/x", "http://10.0.0.7/hook", "http://evil.test/partner.test",
                             "http://partner.test.evil.test/hook"):
                refused = await owner.post("/fhir/Subscription", json=subscription("new-patient", endpoint))
                assert refused.status_code == 400, endpoint
                issue = refused.json()["issue"][0]
                assert "endpoint_hosts" in issue["diagnostics"]
                assert issue["expression"] == ["Subscription.channel.endpoint"]
            assert h.sandbox.receiver("emr").handshakes == 0
            allowed = await owner.post("/fhir/Subscription", json=subscription("new-patient", h.endpoint("emr")))
            assert allowed.status_code == 201 and allowed.json()["status"] == "active"
    finally:
        store.close()
    assert SubscriptionSettings(endpoint_hosts=["*.partner.test"]).endpoint_allowed("emr.Partner.test.")
    assert not SubscriptionSettings(endpoint_hosts=["*.partner.test"]).endpoint_allowed("partner.test")
    assert SubscriptionSettings().endpoint_allowed("10.0.0.7")  # unset: any host, as before


async def test_topics_are_listed_and_readable_as_basic(sqlite_harness: Harness) -> None:
    client = sqlite_harness.client("system/Patient.rs")
    statement = (await client.get("/fhir/metadata")).json()
    rest = statement["rest"][0]
    listed = {e["valueCanonical"] for e in rest["extension"] if e["url"] == TOPIC_EXTENSION}
    assert listed == {TOPIC + "referral", TOPIC + "new-patient", TOPIC + "lab-observation"}
    described = [r for r in rest["resource"] if r["type"] == "Subscription"][0]
    assert {"name": "status", "definition": described["operation"][0]["definition"]} in described["operation"]
    basic = (await client.get("/fhir/Basic/topic-lab-observation")).json()
    assert basic["resourceType"] == "Basic" and basic["code"]["coding"][0]["code"] == "SubscriptionTopic"
    urls = [e.get("valueUri") for e in basic["extension"] if e["url"].endswith(".url")]
    assert urls == [TOPIC + "lab-observation"]
    assert (await client.get("/fhir/Basic/topic-nope")).status_code == 404


async def test_a_bundle_cannot_store_a_subscription_beside_the_endpoints(sqlite_harness: Harness) -> None:
    client = sqlite_harness.client("system/*.cruds")
    entry = {"resource": subscription("new-patient", "http://x.test/h"),
             "request": {"method": "POST", "url": "Subscription"}}
    before = sqlite_harness.store.last_change_seq()
    response = await client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [entry]})
    assert response.json()["entry"][0]["response"]["status"].startswith("403")
    assert sqlite_harness.store.last_change_seq() == before  # nothing was stored


@pytest.mark.parametrize(("method", "path"), [("PUT", "/fhir/Subscription?status=active"),
                                              ("DELETE", "/fhir/Subscription?status=active"),
                                              ("PATCH", "/fhir/Subscription/abc")])
async def test_interactions_that_would_bypass_the_owner_are_not_offered(
    sqlite_harness: Harness, method: str, path: str,
) -> None:
    client = sqlite_harness.client("system/*.cruds")
    response = await client.request(method, path, json=subscription("new-patient", "http://x.test/h"))
    assert response.status_code == 400 and response.json()["issue"][0]["code"] == "not-supported"
