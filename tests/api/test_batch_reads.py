"""A batch Bundle's GET entries read outside the store's write transaction.

Batch entries are independent (http.html#brules), so a read needs no write transaction, and
taking one held the store's write lock while the entry's search ran: a batch of 30
``Patient?_has:Observation:subject:code:not=…&_total=accurate`` entries (a client allowed only to
search) stalled every write of the gateway for 8 s, and a batch may hold thousands of entries.
A transaction's GET entries still run inside it (they see its writes); a transaction of reads only
runs in a read-only store transaction (one state of the store, no write lock).
"""

from __future__ import annotations

import asyncio

from tests.conftest import ApiHarness
from tests.support.write_lock import write_lock_held


async def test_batch_reads_do_not_wait_for_the_write_lock(api_on: ApiHarness) -> None:
    client = api_on.with_scopes("system/*.rs")  # a client that may only read and search
    writer = api_on.client
    created = await writer.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"})
    pid = created.json()["id"]
    entries = [
        {"request": {"method": "GET", "url": "Patient?gender=female"}},
        {"request": {"method": "GET", "url": f"Patient/{pid}"}},
        {"request": {"method": "HEAD", "url": f"Patient/{pid}"}},
        {"request": {"method": "GET", "url": "Patient?gender:bogus=x"}},
    ]
    with write_lock_held(api_on.store, {"resourceType": "Patient", "gender": "male"}):
        batch = await asyncio.wait_for(
            client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries}), timeout=10
        )
    assert batch.status_code == 200, batch.text[:500]
    answers = batch.json()["entry"]
    assert [a["response"]["status"][:3] for a in answers] == ["200", "200", "200", "400"]
    assert [e["resource"]["id"] for e in answers[0]["resource"]["entry"]] == [pid]  # not the uncommitted one
    assert answers[1]["resource"]["id"] == pid and "resource" not in answers[2]
    assert answers[2]["response"]["etag"] == 'W/"1"'


async def test_a_transactions_reads_see_its_writes(api_on: ApiHarness) -> None:
    entries = [
        {"fullUrl": "urn:uuid:7c4a2d1e-0000-4000-8000-000000000001",
         "resource": {"resourceType": "Patient", "gender": "other"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient?gender=other"}},
    ]  # fmt: skip
    response = await api_on.client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                                        "entry": entries})  # fmt: skip
    assert response.status_code == 200, response.text[:500]
    found = response.json()["entry"][1]["resource"]
    assert found["total"] == 1 and found["entry"][0]["resource"]["gender"] == "other"


async def test_a_transaction_of_reads_only_does_not_wait_for_the_write_lock(api_on: ApiHarness) -> None:
    # Its reads run in one read-only transaction (one state of the store), not the write transaction.
    client = api_on.with_scopes("system/*.rs")
    created = await api_on.client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"})
    pid = created.json()["id"]
    entries = [
        {"request": {"method": "GET", "url": "Patient?gender=female"}},
        {"request": {"method": "GET", "url": f"Patient/{pid}"}},
        {"request": {"method": "HEAD", "url": f"Patient/{pid}"}},
    ]
    with write_lock_held(api_on.store, {"resourceType": "Patient", "gender": "female"}):
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        answer = await asyncio.wait_for(client.post("/fhir", json=bundle), timeout=10)
    assert answer.status_code == 200, answer.text[:500]
    found = answer.json()["entry"]
    assert [e["resource"]["id"] for e in found[0]["resource"]["entry"]] == [pid]  # not the uncommitted one
    assert found[1]["resource"]["id"] == pid and "resource" not in found[2]
    # A bad entry fails the whole transaction, naming the entry.
    bad = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [*entries, {"request": {"method": "GET", "url": "Patient?gender:bogus=x"}}],
    }
    refused = await client.post("/fhir", json=bad)
    assert refused.status_code == 400, refused.text[:500]
    assert refused.json()["resourceType"] == "OperationOutcome"
