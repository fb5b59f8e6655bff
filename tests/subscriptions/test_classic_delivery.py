"""Classic R4 criteria-based Subscriptions end to end, on both store backends and both queue backends:
R4's rest-hook (a PUT of each matching resource to ``[endpoint]/[type]/[id]``, or an empty POST
without a payload), matching changes only, in order, each once in effect through refused posts
and lost answers; deletions, other resources and an owner without the scope hear nothing."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from gateway.auth import hash_token, new_token
from gateway.store import KEPT_LINK_EXTENSION
from tests.delivery.helpers import eventually
from tests.subscriptions.harness import Harness, r4_subscription
from tests.subscriptions.test_delivery import _create, _put, _subscribe

BILIRUBIN = "http://loinc.org|1975-2"
CRITERIA = f"Observation?code={BILIRUBIN}"


def _observation(code: str, value: float = 1.0, rid: str | None = None) -> dict[str, Any]:
    system, _, number = code.partition("|")
    resource: dict[str, Any] = {"resourceType": "Observation", "status": "final",
                                "code": {"coding": [{"system": system, "code": number}]},
                                "valueQuantity": {"value": value, "unit": "mg/dL"}}
    if rid is not None:
        resource["id"] = rid
    return resource


async def test_a_payload_puts_each_matching_version_to_endpoint_type_id_in_order_once_through_faults(
    harness: Harness,
) -> None:
    writer = harness.client("system/*.cruds")
    emr = harness.client("system/Subscription.cruds", "system/Observation.rs")
    created = await _subscribe(emr, r4_subscription(CRITERIA, harness.endpoint("emr"),
                                                    headers=["Authorization: Bearer emr-own-token"]))
    receiver = harness.sandbox.receiver("emr")
    assert receiver.handshakes == 0 and receiver.headers == []  # R4 core has no handshake
    await harness.start_worker()
    expected: list[str] = []
    for round_ in range(3):
        if round_ == 1:
            harness.sandbox.fault("emr", fail=2, status=503)  # refused: retried
        if round_ == 2:
            harness.sandbox.fault("emr", lose=2)  # kept, but the answer is lost: sent again
        for index in range(3):
            rid = f"bili-{round_}-{index}"
            await _put(writer, _observation(BILIRUBIN, 1.0, rid))
            expected.append(f"Observation/{rid}")
            await _create(writer, _observation("http://loinc.org|718-7"))  # haemoglobin: not the criteria
        await _put(writer, _observation(BILIRUBIN, 2.5, f"bili-{round_}-0"))  # an update is a new version
        expected.append(f"Observation/bili-{round_}-0")
        await eventually(lambda: len(receiver.puts) == len(expected), timeout=30)
    await eventually(lambda: receiver.duplicates >= 2, timeout=30)  # the lost answers' PUTs, sent again
    await asyncio.sleep(0.3)  # nothing more arrives
    assert receiver.updated() == expected
    assert receiver.order_errors == [] and receiver.malformed == [] and receiver.pings == 0
    assert receiver.puts["Observation/bili-2-0/_history/2"]["valueQuantity"]["value"] == 2.5
    assert all(r["code"]["coding"][0]["code"] == "1975-2" for r in receiver.puts.values())
    assert {h.get("authorization") for h in receiver.headers} == {"Bearer emr-own-token"}
    assert {h.get("content-type") for h in receiver.headers} == {"application/fhir+json"}
    read = (await emr.get(f"/fhir/Subscription/{created['id']}")).json()
    assert read["status"] == "active" and "error" not in read


async def test_without_a_payload_each_matching_change_is_an_empty_post(harness: Harness) -> None:
    writer = harness.client("system/*.cruds")
    emr = harness.client("system/Subscription.cruds", "system/Observation.rs")
    await _subscribe(emr, r4_subscription(CRITERIA, harness.endpoint("ping"), payload=None,
                                          headers=["X-Partner: district-emr"]))
    await harness.start_worker()
    for index in range(4):
        await _create(writer, _observation(BILIRUBIN, float(index)))
        await _create(writer, _observation("http://loinc.org|718-7"))
    receiver = harness.sandbox.receiver("ping")
    await eventually(lambda: receiver.pings == 4, timeout=20)
    await asyncio.sleep(0.3)
    assert receiver.pings == 4 and receiver.puts == {} and receiver.events == {} and receiver.malformed == []
    assert all(h.get("x-partner") == "district-emr" and h.get("content-length") == "0" for h in receiver.headers)


async def test_deletions_other_resources_and_an_owner_without_the_scope_hear_nothing(harness: Harness) -> None:
    writer = harness.client("system/*.cruds")
    emr = harness.client("system/Subscription.cruds", "system/Observation.rs")
    await _subscribe(emr, r4_subscription(CRITERIA, harness.endpoint("emr")))
    # A client that may not read Observations cannot subscribe to them …
    blind = harness.client("system/Subscription.cruds", "system/Patient.rs")
    refused = await blind.post("/fhir/Subscription", json=r4_subscription(CRITERIA, harness.endpoint("blind")))
    assert refused.status_code == 403 and refused.json()["issue"][0]["expression"] == ["Subscription.criteria"]
    # … and one that could when it subscribed but can no longer hears nothing of them.
    dropped = harness.client("system/Subscription.cruds", "system/Observation.rs")
    await _subscribe(dropped, r4_subscription(CRITERIA, harness.endpoint("dropped")))
    await _narrow(harness, dropped, "system/Subscription.cruds")
    await harness.start_worker()
    await _create(writer, {"resourceType": "Patient", "name": [{"family": f"F{uuid.uuid4().hex[:6]}"}]})
    await _create(writer, _observation("http://loinc.org|718-7"))
    await _put(writer, _observation(BILIRUBIN, 3.0, "bili-gone"))
    receiver = harness.sandbox.receiver("emr")
    # Waited for: a resource is judged as the store holds it when the change is read.
    await eventually(lambda: len(receiver.puts) == 1, timeout=20)
    assert (await writer.delete("/fhir/Observation/bili-gone")).status_code in (200, 204)
    await asyncio.sleep(0.5)  # the deletion (R4: never notified) would have come by now
    assert receiver.updated() == ["Observation/bili-gone"] and receiver.pings == 0
    for name in ("blind", "dropped"):
        quiet = harness.sandbox.receiver(name)
        assert quiet.puts == {} and quiet.pings == 0 and quiet.headers == []


async def _narrow(harness: Harness, client: httpx.AsyncClient, *scopes: str) -> None:
    """Give the API client behind ``client`` only ``scopes`` (as an operator would)."""
    token = str(client.headers["Authorization"]).removeprefix("Bearer ")
    record = harness.store.client_by_token_hash(hash_token(token))
    assert record is not None
    fresh = new_token()
    harness.store.save_client(replace(record, scopes=tuple(scopes)), hash_token(fresh))
    client.headers["Authorization"] = f"Bearer {fresh}"


async def test_an_owner_given_de_identified_data_is_sent_resources_de_identified(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    writer = h.client("system/*.cruds")
    research = h.client("system/Subscription.cruds", "system/Patient.rs", policy={"deidentify": True})
    await _subscribe(research, r4_subscription("Patient?gender=female", h.endpoint("research")))
    await h.start_worker()
    await _put(writer, {"resourceType": "Patient", "id": "p-f", "gender": "female", "birthDate": "1990-05-04",
                        "name": [{"family": "Uwimana"}]})
    await _put(writer, {"resourceType": "Patient", "id": "p-m", "gender": "male", "name": [{"family": "Habimana"}]})
    receiver = h.sandbox.receiver("research")
    await eventually(lambda: len(receiver.puts) == 1, timeout=20)
    await asyncio.sleep(0.3)
    sent = receiver.puts["Patient/p-f/_history/1"]
    assert receiver.updated() == ["Patient/p-f"]
    assert "name" not in sent and sent["birthDate"] == "1990" and "Uwimana" not in str(receiver.puts)


async def test_an_owner_whose_policy_limits_rows_is_sent_no_identity_matcher_links(sqlite_harness: Harness) -> None:
    """As on its reads: the matcher's links name other sources' records of the person (maybe hidden)."""
    h = sqlite_harness
    writer = h.client("system/*.cruds")
    district = h.client("system/Subscription.cruds", "system/Patient.rs", policy={"districts": ["Gasabo"]})
    await _subscribe(district, r4_subscription("Patient?gender=female", h.endpoint("district")))
    await h.start_worker()
    kept = {"other": {"reference": "Patient/elsewhere"}, "type": "seealso",
            "extension": [{"url": KEPT_LINK_EXTENSION, "valueString": "score 21.0"}]}
    own = {"other": {"reference": "Patient/p-m"}, "type": "seealso"}
    await _put(writer, {"resourceType": "Patient", "id": "p-f", "gender": "female", "link": [kept, own],
                        "address": [{"district": "Gasabo"}]})
    receiver = h.sandbox.receiver("district")
    await eventually(lambda: len(receiver.puts) == 1, timeout=20)
    sent = receiver.puts["Patient/p-f/_history/1"]
    assert sent["link"] == [own] and "elsewhere" not in str(receiver.puts)


async def test_after_its_end_a_subscription_is_switched_off_and_hears_nothing(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    writer = h.client("system/*.cruds")
    emr = h.client("system/Subscription.cruds", "system/Observation.rs")
    end = datetime.now(UTC) + timedelta(seconds=1.5)
    body = {**r4_subscription(CRITERIA, h.endpoint("emr")), "end": end.isoformat().replace("+00:00", "Z")}
    created = await _subscribe(emr, body)
    await h.start_worker()
    await _put(writer, _observation(BILIRUBIN, 1.0, "before-end"))
    receiver = h.sandbox.receiver("emr")
    await eventually(lambda: len(receiver.puts) == 1, timeout=20)
    await asyncio.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()) + 0.1)
    await _put(writer, _observation(BILIRUBIN, 2.0, "after-end"))

    async def switched_off() -> bool:
        return bool((await emr.get(f"/fhir/Subscription/{created['id']}")).json()["status"] == "off")

    await eventually(switched_off, timeout=20)
    await asyncio.sleep(0.3)
    assert receiver.updated() == ["Observation/before-end"]


async def test_matching_follows_what_the_owner_may_search_and_see_now(sqlite_harness: Harness) -> None:
    """The criteria is a search the follower runs for the owner on every batch: a chain or ``_has``
    into a type the owner may no longer search, or a name its data policy now strips, matches
    nothing (checked when it subscribed, and again whenever it is matched)."""
    h = sqlite_harness
    writer = h.client("system/*.cruds")
    narrowed = h.client("system/Subscription.cruds", "system/Patient.rs", "system/Observation.rs")
    await _subscribe(narrowed, r4_subscription("Patient?_has:Observation:subject:code=HIV-POS", h.endpoint("has")))
    await _narrow(h, narrowed, "system/Subscription.cruds", "system/Patient.rs")
    stripped = h.client("system/Subscription.cruds", "system/Patient.rs")
    by_name = await _subscribe(stripped, r4_subscription("Patient?family=Uwimana", h.endpoint("name")))
    record = h.store.subscription_get(by_name["id"])
    assert record is not None and h.store.set_client_policy(record.owner, {"deidentify": True})
    control = h.client("system/Subscription.cruds", "system/Patient.rs", "system/Observation.rs")
    await _subscribe(control, r4_subscription("Patient?_has:Observation:subject:code=HIV-POS", h.endpoint("control")))
    await h.start_worker()
    await _put(writer, {"resourceType": "Patient", "id": "p-u", "name": [{"family": "Uwimana"}]})
    await _put(writer, {"resourceType": "Observation", "id": "o-u", "status": "final",
                        "code": {"coding": [{"code": "HIV-POS"}]}, "subject": {"reference": "Patient/p-u"}})
    await _put(writer, {"resourceType": "Patient", "id": "p-u", "name": [{"family": "Uwimana"}], "active": True})
    # One notification, or two when the worker first looked after all three writes: matching is
    # judged on the stored state, where the Observation already stands beside the first version.
    await eventually(lambda: len(h.sandbox.receiver("control").puts) >= 1, timeout=20)
    assert set(h.sandbox.receiver("control").puts) <= {"Patient/p-u/_history/1", "Patient/p-u/_history/2"}
    await asyncio.sleep(0.5)
    for quiet in ("has", "name"):
        receiver = h.sandbox.receiver(quiet)
        assert receiver.puts == {} and receiver.pings == 0, quiet
